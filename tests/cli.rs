//! The binary from the outside: bad input gives one clear line and the right exit code;
//! the operator commands work; --help lists every subcommand.

mod common;

use std::process::{Command, Output};

use common::{bin, server_url, TestDb};

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run postpub")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One `error:` line naming `what`, the exit code `code`, no panic.
fn assert_clear_failure(o: &Output, code: i32, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {err}");
    assert!(
        lines[0].contains(what),
        "error line does not name {what:?}: {}",
        lines[0]
    );
}

/// (arguments, exit code, what the one error line must name)
const BAD_INVOCATIONS: &[(&[&str], i32, &str)] = &[
    // An unreachable database: exit 1, naming the address.
    (
        &["--database-url", "postgres://postgres@127.0.0.1:1/x", "run"],
        1,
        "127.0.0.1:1/x",
    ),
    // A URL the driver cannot read is a usage error (2), not an unreachable database (1).
    (
        &["status", "--database-url", "postgres://u@h:port/x"],
        2,
        "database.url is not a PostgreSQL connection URL",
    ),
    (
        &["status", "--database-url", "garbage"],
        2,
        "database.url is not a PostgreSQL connection URL",
    ),
    // A missing configuration file: exit 2, naming it.
    (
        &["--config", "/nonexistent/postpub.toml", "run"],
        2,
        "/nonexistent/postpub.toml",
    ),
];

#[test]
fn an_unreachable_database_a_malformed_url_or_a_missing_config_file_is_named() {
    for (args, code, what) in BAD_INVOCATIONS {
        eprintln!("postpub {}", args.join(" "));
        assert_clear_failure(&run(args), *code, what);
    }
}

#[tokio::test]
async fn an_unmigrated_database_says_to_run_migrate() {
    let db = TestDb::empty().await;
    let o = run(&["run", "--database-url", &db.url]);
    assert_clear_failure(&o, 1, "run `postpub migrate`");
}

#[test]
fn an_invalid_config_value_is_exit_2_naming_the_key() {
    let dir = common::Script::new("");
    let path = dir.dir.join("bad.toml");
    std::fs::write(&path, "[worker]\nconcurrency = \"lots\"\n").expect("write");
    let o = run(&["run", "--config", path.to_str().expect("utf-8 path")]);
    assert_clear_failure(&o, 2, "worker.concurrency");
    std::fs::write(&path, "[pipeline]\nsteps = [\"colate\"]\n").expect("write");
    let o = run(&["run", "--config", path.to_str().expect("utf-8 path")]);
    assert_clear_failure(&o, 2, "colate");
}

#[test]
fn help_lists_every_subcommand() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for sub in [
        "migrate", "run", "relay", "status", "requeue", "publish", "bake", "demo", "bench",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help does not list {sub}:\n{help}"
        );
    }
}

#[tokio::test]
async fn publish_status_and_requeue_from_the_command_line() {
    let db = TestDb::new().await;
    let dir = common::Script::new("");
    let body = dir.dir.join("body.html");
    let recipe = dir.dir.join("recipe.css");
    std::fs::write(&body, "<p>hello</p>").expect("write");
    std::fs::write(&recipe, "p { color: inherit; }").expect("write");
    let url = db.url.as_str();

    // `postpub publish` of cli-doc with `extra` arguments; prints the new version's id.
    let publish = |extra: &[&str]| -> i64 {
        let mut args = vec![
            "publish",
            "--database-url",
            url,
            "--document",
            "cli-doc",
            "--body",
            body.to_str().unwrap_or_default(),
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("prints the version id")
    };
    let id = publish(&[]);
    let c = db.client().await;
    assert_eq!(db.state(&c, id).await, "current");

    let with_recipe = publish(&["--recipe", recipe.to_str().unwrap_or_default()]);
    assert_eq!(db.state(&c, with_recipe).await, "post-publication");

    // Make it errored by hand, as a failing pipeline would, then requeue it.
    c.execute(
        "update postpub.versions set state = 'errored', last_error = 'boom' where id = $1",
        &[&with_recipe],
    )
    .await
    .expect("error it");
    let o = run(&["status", "--database-url", url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("errored") && out.contains("boom") && out.contains("cli-doc"),
        "{out}"
    );
    let o = run(&["status", "--json", "--database-url", url]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json is JSON");
    assert_eq!(json["errors"][0]["id"], serde_json::json!(with_recipe));

    let requeue_it = [
        "requeue",
        "--database-url",
        url,
        "--id",
        &with_recipe.to_string(),
    ];
    let o = run(&requeue_it);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(db.state(&c, with_recipe).await, "post-publication");
    // Requeueing it again is refused: it is no longer errored.
    let o = run(&requeue_it);
    assert_clear_failure(&o, 1, "not errored");
    let o = run(&["requeue", "--database-url", url, "--errored"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("requeued 0 errored versions"));

    let o = run(&[
        "publish",
        "--database-url",
        url,
        "--document",
        "cli-doc",
        "--delete",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "publish",
        "--database-url",
        url,
        "--document",
        "x",
        "--body",
        "/nonexistent.html",
    ]);
    assert_clear_failure(&o, 1, "/nonexistent.html");
}

#[tokio::test]
async fn the_demo_runs_end_to_end() {
    let name = format!(
        "postpub_t_demo_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let o = run(&["demo", "--database-url", &server_url(), "--database", &name]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let admin = common::connect(&server_url()).await;
    let _ = admin
        .batch_execute(&format!("drop database if exists {name} with (force)"))
        .await;
    assert!(o.status.success(), "demo failed: {}\n{out}", stderr(&o));
    for want in [
        "current",
        "superseded",
        "archived",
        "errored",
        "deleted",
        "malformed HTML",
    ] {
        assert!(out.contains(want), "demo output lacks {want:?}:\n{out}");
    }
}

/// `r.css` holding `css` and `in.html` holding `html`, in a temp dir that lives as long as
/// the first value; their paths.
fn bake_inputs(css: &str, html: &str) -> (common::Script, String, String) {
    let dir = common::Script::new("");
    let recipe = dir.dir.join("r.css");
    let input = dir.dir.join("in.html");
    std::fs::write(&recipe, css).expect("write the recipe");
    std::fs::write(&input, html).expect("write the input");
    let path = |p: std::path::PathBuf| p.to_str().unwrap_or_default().to_owned();
    (dir, path(recipe), path(input))
}

#[test]
fn bake_of_a_memory_bomb_fails_at_once_with_one_line_naming_the_limit() {
    let (_dir, recipe, input) = bake_inputs(
        "div { string-set: s string(s) string(s) \"x\"; } body::after { content: string(s); }",
        &format!("<html><body>{}</body></html>", "<div>a</div>".repeat(40)),
    );
    let t = std::time::Instant::now();
    let o = run(&["bake", &recipe, &input]);
    let took = t.elapsed();
    assert_clear_failure(&o, 1, "limit");
    let err = stderr(&o);
    assert!(
        err.contains("recipe line 1, rule \"div\"") && err.contains("text created by the recipe"),
        "{err}"
    );
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

#[test]
fn bake_writes_the_baked_document_and_names_a_bad_recipe_line() {
    let (dir, recipe, input) = bake_inputs(
        "p.note { move-to: notes; }\ndiv::after { content: pending(notes); }\n",
        "<div><p class=\"note\">n</p><p>t</p></div>",
    );
    let output = dir.dir.join("out.html");
    let o = run(&[
        "bake",
        &recipe,
        &input,
        "-o",
        output.to_str().unwrap_or_default(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let baked = std::fs::read_to_string(&output).expect("output written");
    assert_eq!(
        baked.trim_end(),
        "<div><p>t</p><div><p class=\"note\">n</p></div></div>"
    );

    std::fs::write(
        &recipe,
        "p.note { move-to: notes; }\np::insde { content: \"x\"; }\n",
    )
    .expect("write");
    // by default as cnx-easybake: a rule for an unknown pseudo-element never runs (the
    // reference says nothing; --verbose shows it)
    let o = run(&["bake", &recipe, &input]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    let o = run(&["bake", "-v", &recipe, &input]);
    assert!(
        stderr(&o).contains("info: ")
            && stderr(&o).contains("recipe line 2: Rules for ::insde never run"),
        "{}",
        stderr(&o)
    );
    // the flag of the former opt-in mode is still accepted
    let o = run(&["bake", "--compat", &recipe, &input]);
    assert!(o.status.success(), "{}", stderr(&o));
    // --strict refuses the recipe, naming the file, line and rule
    let o = run(&["bake", "--strict", &recipe, &input]);
    assert_clear_failure(&o, 1, "line 2");
    assert!(
        stderr(&o).contains("r.css") && stderr(&o).contains("::insde"),
        "{}",
        stderr(&o)
    );
}
