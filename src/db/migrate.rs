//! Forward-only schema migrations from `sql/NNNN_*.sql`, applied once, in order, by
//! `postpub migrate`, and the schema version check the daemon runs before it starts.
//!
//! All pending migrations run in one transaction under a transaction-level advisory lock,
//! so two `migrate` processes started at the same moment serialise: the second finds the
//! work done. Each migration's row goes into `postpub.migrations` before its SQL runs.

use tokio_postgres::{Client, GenericClient};

use super::Error;

/// One numbered migration file.
pub struct Migration {
    /// The number in the file name; contiguous from 1.
    pub version: i32,
    /// The file name's topic, recorded in `postpub.migrations`.
    pub name: &'static str,
    /// The SQL itself.
    pub sql: &'static str,
}

/// One entry of [`MIGRATIONS`]: `sql/<file>`, embedded.
macro_rules! migration {
    ($version:expr, $name:expr, $file:expr) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../sql/", $file)),
        }
    };
}

/// Every migration this binary knows, in order. A test checks this matches `sql/` on disk.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "schema", "0001_schema.sql"),
    migration!(2, "api", "0002_api.sql"),
    migration!(3, "worker", "0003_worker.sql"),
    migration!(4, "operations", "0004_operations.sql"),
    migration!(5, "outbox", "0005_outbox.sql"),
    migration!(6, "input_limits", "0006_input_limits.sql"),
    migration!(7, "console", "0007_console.sql"),
    migration!(8, "storage", "0008_storage.sql"),
    migration!(9, "hot_path", "0009_hot_path.sql"),
    migration!(
        10,
        "lean_claim_and_finish",
        "0010_lean_claim_and_finish.sql"
    ),
    migration!(11, "finish_arrays", "0011_finish_arrays.sql"),
    migration!(12, "claim_next_version", "0012_claim_next_version.sql"),
    migration!(13, "finish_by_document", "0013_finish_by_document.sql"),
];

/// The schema version this binary needs.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Arbitrary but fixed key of the advisory lock taken while migrating ("postpub" in hex).
const LOCK_KEY: i64 = 0x0070_6f73_7470_7562;

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Schema version before.
    pub from: i32,
    /// Schema version after.
    pub to: i32,
}

/// Applies every migration newer than the database's schema version.
pub async fn migrate(client: &mut Client) -> Result<Report, Error> {
    migrate_to(client, latest()).await
}

/// Applies the migrations newer than the database's schema version up to `target`: what
/// an older release would have left (the upgrade tests fill such a database, then migrate
/// it the rest of the way).
pub async fn migrate_to(client: &mut Client, target: i32) -> Result<Report, Error> {
    let tx = client
        .transaction()
        .await
        .map_err(Error::query("starting the migration transaction"))?;
    // Re-running is normal; "already exists, skipping" notices are not news.
    tx.batch_execute("set local client_min_messages = warning")
        .await
        .map_err(Error::query("configuring the migration transaction"))?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(Error::query("taking the migration lock"))?;
    tx.batch_execute(
        "create schema if not exists postpub;
         create table if not exists postpub.migrations (
           version    int primary key,
           name       text not null,
           applied_at timestamptz not null default now()
         );",
    )
    .await
    .map_err(Error::query("creating postpub.migrations"))?;
    let from: i32 = tx
        .query_one(
            "select coalesce(max(version), 0) from postpub.migrations",
            &[],
        )
        .await
        .map_err(Error::query("reading the schema version"))?
        .get(0);
    if from > latest() {
        return Err(Error::TooNew {
            found: from,
            need: latest(),
        });
    }
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= target)
    {
        tx.execute(
            "insert into postpub.migrations (version, name) values ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(Error::query("recording a migration"))?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|error| Error::Query {
                what: format!("applying migration {:04}_{}", m.version, m.name).into(),
                error,
            })?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
    }
    // Roles are cluster-wide and grants per database: re-applied on every run, so roles
    // dropped since, or objects added by any migration, are covered (0004_operations).
    let has_grants: bool = tx
        .query_one(
            "select to_regprocedure('postpub._apply_grants()') is not null",
            &[],
        )
        .await
        .map_err(Error::query("looking for postpub._apply_grants"))?
        .get(0);
    if has_grants {
        tx.execute("select postpub._apply_grants()", &[])
            .await
            .map_err(Error::query(
                "creating the postpub roles and granting their privileges",
            ))?;
    }
    tx.commit()
        .await
        .map_err(Error::query("committing the migrations"))?;
    Ok(Report {
        from,
        to: target.min(latest()).max(from),
    })
}

/// Stores `pipeline.max_body_bytes` in the database, where `postpub.publish` checks the
/// versions published without a recipe (they never reach a daemon). `migrate` and `run`
/// call it; with several daemons, the last one started sets the limit.
pub async fn set_max_body_bytes(client: &impl GenericClient, bytes: u64) -> Result<(), Error> {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    client
        .execute(super::sql::SET_MAX_BODY_BYTES, &[&bytes])
        .await
        .map_err(Error::query("storing pipeline.max_body_bytes"))?;
    Ok(())
}

/// The schema version of the database (0 when postpub was never migrated there).
pub async fn schema_version(client: &Client) -> Result<i32, Error> {
    let exists: bool = client
        .query_one("select to_regclass('postpub.migrations') is not null", &[])
        .await
        .map_err(Error::query("looking for the postpub schema"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "select coalesce(max(version), 0) from postpub.migrations",
            &[],
        )
        .await
        .map_err(Error::query("reading the schema version"))?;
    Ok(row.get(0))
}

/// Refuses to run against a schema that is older or newer than this binary.
pub async fn check(client: &Client) -> Result<(), Error> {
    let found = schema_version(client).await?;
    let need = latest();
    if found < need {
        Err(Error::NotMigrated { found, need })
    } else if found > need {
        Err(Error::TooNew { found, need })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_contiguous_and_match_the_files_on_disk() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("sql/ exists")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "files on disk: {files:?}");
        for (i, (m, file)) in MIGRATIONS.iter().zip(&files).enumerate() {
            assert_eq!(m.version, i as i32 + 1);
            assert_eq!(file, &format!("{:04}_{}.sql", m.version, m.name));
            let on_disk = std::fs::read_to_string(dir.join(file)).expect("readable");
            assert_eq!(on_disk, m.sql, "{file} differs from the compiled-in copy");
        }
    }
}
