//! The statements the daemon and the CLI run, one file each under `sql/queries/`, named
//! after the function that runs it (STYLE §5). Business rules live in the SQL functions
//! of the migrations; these files only call them or read.

/// See `sql/queries/claim_batch.sql`.
pub const CLAIM_BATCH: &str = include_str!("../../sql/queries/claim_batch.sql");
/// See `sql/queries/finish_batch.sql`.
pub const FINISH_BATCH: &str = include_str!("../../sql/queries/finish_batch.sql");
/// See `sql/queries/release_claims.sql`.
pub const RELEASE_CLAIMS: &str = include_str!("../../sql/queries/release_claims.sql");
/// See `sql/queries/renew_leases.sql`.
pub const RENEW_LEASES: &str = include_str!("../../sql/queries/renew_leases.sql");
/// See `sql/queries/rescue_expired.sql`.
pub const RESCUE_EXPIRED: &str = include_str!("../../sql/queries/rescue_expired.sql");
/// See `sql/queries/fetch_body.sql`.
pub const FETCH_BODY: &str = include_str!("../../sql/queries/fetch_body.sql");
/// See `sql/queries/fetch_recipe.sql`.
pub const FETCH_RECIPE: &str = include_str!("../../sql/queries/fetch_recipe.sql");
/// See `sql/queries/status_counts.sql`.
pub const STATUS_COUNTS: &str = include_str!("../../sql/queries/status_counts.sql");
/// See `sql/queries/status_errors.sql`.
pub const STATUS_ERRORS: &str = include_str!("../../sql/queries/status_errors.sql");
/// See `sql/queries/status_outbox.sql`.
pub const STATUS_OUTBOX: &str = include_str!("../../sql/queries/status_outbox.sql");
/// See `sql/queries/publish_version.sql`.
pub const PUBLISH_VERSION: &str = include_str!("../../sql/queries/publish_version.sql");
/// See `sql/queries/delete_document.sql`.
pub const DELETE_DOCUMENT: &str = include_str!("../../sql/queries/delete_document.sql");
/// See `sql/queries/requeue_version.sql`.
pub const REQUEUE_VERSION: &str = include_str!("../../sql/queries/requeue_version.sql");
/// See `sql/queries/requeue_errored.sql`.
pub const REQUEUE_ERRORED: &str = include_str!("../../sql/queries/requeue_errored.sql");
/// See `sql/queries/metrics_backlog.sql`.
pub const METRICS_BACKLOG: &str = include_str!("../../sql/queries/metrics_backlog.sql");
/// See `sql/queries/current_document.sql`.
pub const CURRENT_DOCUMENT: &str = include_str!("../../sql/queries/current_document.sql");
/// See `sql/queries/status_parked.sql`.
pub const STATUS_PARKED: &str = include_str!("../../sql/queries/status_parked.sql");
/// See `sql/queries/requeue_event.sql`.
pub const REQUEUE_EVENT: &str = include_str!("../../sql/queries/requeue_event.sql");
/// See `sql/queries/claim_events.sql`.
pub const CLAIM_EVENTS: &str = include_str!("../../sql/queries/claim_events.sql");
/// See `sql/queries/record_deliveries.sql`.
pub const RECORD_DELIVERIES: &str = include_str!("../../sql/queries/record_deliveries.sql");
/// See `sql/queries/purge_delivered.sql`.
pub const PURGE_DELIVERED: &str = include_str!("../../sql/queries/purge_delivered.sql");
/// See `sql/queries/set_max_body_bytes.sql`.
pub const SET_MAX_BODY_BYTES: &str = include_str!("../../sql/queries/set_max_body_bytes.sql");
/// See `sql/queries/document_chunks.sql`.
pub const DOCUMENT_CHUNKS: &str = include_str!("../../sql/queries/document_chunks.sql");

/// See `sql/queries/drop_database.sql`; use with [`for_database`].
pub const DROP_DATABASE: &str = include_str!("../../sql/queries/drop_database.sql");
/// See `sql/queries/create_database.sql`; use with [`for_database`].
pub const CREATE_DATABASE: &str = include_str!("../../sql/queries/create_database.sql");

/// `template` (DDL naming a database) with `{database}` replaced by `name` as a quoted
/// identifier. The one place identifiers go into SQL text: DDL takes no parameters.
pub fn for_database(template: &str, name: &str) -> String {
    template.replace("{database}", &quote_ident(name))
}

/// `name` as a PostgreSQL identifier: double-quoted, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
