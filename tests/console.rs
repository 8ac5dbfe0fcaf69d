//! The operator console (`/console`) against an in-process daemon and the real
//! PostgreSQL: every route, the requeue actions and their audit, CSRF refusal, the
//! permission levels, escaping of published HTML, the sandboxed preview, 404s and the
//! live stream. (The browser drives it in `tests/console_browser.rs`.)

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::ops::free_port;
use common::{wait_until, Daemon, TestDb};
use postpub::config::{Config, ConsoleRole, ConsoleUser};
use tokio_postgres::Client;

const XSS: &str = "<div><script>window.consolexss=1</script><p>x</p></div>";
const BROKEN: &str = "<div><p>unclosed</div>";

/// A daemon with the console on a free port, documents ok / broken / xss settled.
struct Fixture {
    db: TestDb,
    c: Client,
    daemon: Daemon,
    base: String,
    http: reqwest::Client,
    broken: i64,
    xss: i64,
}

async fn setup(tweak: impl FnOnce(&mut Config)) -> Fixture {
    let db = TestDb::new().await;
    let c = db.client().await;
    let port = free_port();
    let mut cfg = db.config();
    cfg.http.listen = format!("127.0.0.1:{port}");
    cfg.pipeline.steps = vec!["validate".to_owned()];
    tweak(&mut cfg);
    let daemon = Daemon::start(cfg).await;
    db.publish(&c, "console-ok", "<div><p>fine</p></div>", Some("p {}"))
        .await;
    db.publish(
        &c,
        "console-ok",
        "<div><p>fine again</p></div>",
        Some("p {}"),
    )
    .await;
    let broken = db.publish(&c, "console-broken", BROKEN, Some("p {}")).await;
    let xss = db.publish(&c, "console-xss", XSS, Some("p {}")).await;
    wait_until(Duration::from_secs(20), "versions settled", || async {
        db.pending(&c).await == 0
    })
    .await;
    assert_eq!(db.state(&c, broken).await, "errored");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    Fixture {
        db,
        c,
        daemon,
        base: format!("http://127.0.0.1:{port}"),
        http,
        broken,
        xss,
    }
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The first CSRF token on the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body));
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').expect("end of token")].to_owned()
    }
}

impl Page {
    /// A 303 back to a page with a message containing `msg` (URL-encoded).
    fn redirects_saying(&self, msg: &str) {
        assert_eq!(self.status, 303, "{}", self.body);
        let to = self.header("location");
        assert!(to.contains(msg), "{to:?} does not say {msg:?}");
    }
}

impl Fixture {
    async fn send(&self, mut req: reqwest::RequestBuilder, path: &str, auth: Option<&str>) -> Page {
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.expect("body"),
        }
    }

    async fn get_as(&self, path: &str, auth: Option<&str>) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req, path, auth).await
    }

    async fn get(&self, path: &str) -> Page {
        self.get_as(path, None).await
    }

    async fn post_as(&self, path: &str, form: &[(&str, &str)], auth: Option<&str>) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req, path, auth).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_as(path, form, None).await
    }

    async fn console_transitions(&self, id: i64) -> Vec<String> {
        self.c
            .query(
                "select by from postpub.transitions where version_id = $1 and why = 'requeued from the console' order by id",
                &[&id],
            )
            .await
            .expect("transitions")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

#[tokio::test]
async fn every_page_answers_with_security_headers_and_escapes_published_html() {
    let f = setup(|_| {}).await;
    let doc = "/console/document?name=console-xss";
    for path in [
        "/console",
        "/console/versions",
        "/console/versions?state=errored",
        "/console/versions?doc=console-&state=current",
        "/console/versions?doc=xss&match=contains",
        "/console/versions?since=2000-01-01T00:00&until=2100-01-01T00:00",
        "/console/requeue-matching?doc=console-",
        doc,
        "/console/document?name=console-ok&a=1&b=2",
    ] {
        let p = f.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(p.header("content-type").starts_with("text/html"), "{path}");
        let csp = p.header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
        assert_eq!(p.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(p.header("x-frame-options"), "DENY", "{path}");
        assert!(
            !p.body.contains("<script>window.consolexss"),
            "{path} carries the script unescaped"
        );
    }
    // The errored document and its reason, step named.
    let errors = f.get("/console/versions?state=errored").await;
    assert!(errors.body.contains("console-broken"), "{}", errors.body);
    assert!(errors.body.contains("step validate: "), "{}", errors.body);
    // The document page escapes the body in the diff and frames the preview in a sandbox.
    let page = f.get(doc).await;
    assert!(
        page.body.contains(&format!(
            "<iframe class=\"preview\" sandbox=\"\" src=\"/console/preview/{}\"",
            f.xss
        )),
        "{}",
        page.body
    );
    let diff = f.get("/console/document?name=console-ok&a=1&b=2").await;
    assert!(
        diff.body
            .contains("<div class=\"del\">&lt;div&gt;&lt;p&gt;fine&lt;/p&gt;&lt;/div&gt;</div>"),
        "{}",
        diff.body
    );
    assert!(
        diff.body
            .contains("<div class=\"add\">&lt;div&gt;&lt;p&gt;fine again"),
        "{}",
        diff.body
    );
    // The preview is the one response with the published HTML, under a sandbox policy.
    let preview = f.get(&format!("/console/preview/{}", f.xss)).await;
    assert_eq!(preview.status, 200);
    assert!(preview
        .body
        .contains("<script>window.consolexss=1</script>"));
    let csp = preview.header("content-security-policy");
    assert!(
        csp.starts_with("sandbox;") && !csp.contains("allow-scripts"),
        "{csp}"
    );
    // Assets come from the binary.
    let css = f.get("/console/assets/console.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    let js = f.get("/console/assets/console.js").await;
    assert!(js.body.contains("EventSource"));
    f.daemon.stop().await;
}

#[tokio::test]
async fn unknown_things_are_404_and_bad_input_400_never_5xx() {
    let f = setup(|_| {}).await;
    for (path, want) in [
        ("/console/document?name=never-published", 404),
        ("/console/preview/999999999", 404),
        ("/console/preview/abc", 404),
        ("/console/nothing-here", 404),
        ("/console/assets/nope.js", 404),
        ("/console/versions?state=bogus", 400),
        ("/console/versions?before=x", 400),
        ("/console/versions?since=not-a-time", 400),
        ("/console/document", 400),
        ("/console/document?name=console-ok&a=x&b=1", 400),
        ("/console/document?name=console-ok&a=1&b=999999", 404),
        ("/console/requeue-matching?doc=x&match=contains", 400),
    ] {
        let p = f.get(path).await;
        assert_eq!(p.status, want, "{path}: {}", p.body);
        assert!(
            p.header("content-security-policy")
                .contains("default-src 'none'"),
            "{path}"
        );
    }
    f.daemon.stop().await;
}

#[tokio::test]
async fn posts_without_a_valid_csrf_token_are_refused_and_change_nothing() {
    let f = setup(|_| {}).await;
    let id = f.broken.to_string();
    let token = f.get("/console").await.csrf();
    for form in [
        vec![("one", id.as_str())],
        vec![("one", id.as_str()), ("csrf", "")],
        vec![("one", id.as_str()), ("csrf", "00ff")],
    ] {
        let p = f.post("/console/requeue", &form).await;
        assert_eq!(p.status, 403, "{form:?}: {}", p.body);
    }
    assert_eq!(
        f.post("/console/requeue-matching", &[("doc", "")])
            .await
            .status,
        403
    );
    assert_eq!(
        f.post("/console/requeue-event", &[("event", "x")])
            .await
            .status,
        403
    );
    // The right token from another origin is refused too.
    let r = f
        .http
        .post(format!("{}/console/requeue", f.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Origin", "https://elsewhere.example")
        .body(format!("one={id}&csrf={token}"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(f.db.state(&f.c, f.broken).await, "errored");
    assert!(f.console_transitions(f.broken).await.is_empty());
    f.daemon.stop().await;
}

#[tokio::test]
async fn an_operator_requeues_one_selected_and_matching_versions_and_the_audit_names_them() {
    let f = setup(|_| {}).await;
    let token = f.get("/console/versions?state=errored").await.csrf();
    let id = f.broken.to_string();
    // One.
    let p = f
        .post(
            "/console/requeue",
            &[
                ("csrf", &token),
                ("one", &id),
                ("back", "/console/versions?state=errored"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let to = p.header("location").to_owned();
    assert!(
        to.starts_with("/console/versions?state=errored&msg=Requeued+1"),
        "{to}"
    );
    assert_eq!(
        f.console_transitions(f.broken).await,
        vec!["console:local as postgres"]
    );
    let wait_errored = |id: i64| {
        let (db, c) = (&f.db, &f.c);
        async move {
            wait_until(Duration::from_secs(20), "errored again", || async {
                db.state(c, id).await == "errored"
            })
            .await
        }
    };
    wait_errored(f.broken).await;
    // A selection: a second broken version, and a current one that is left alone.
    let other =
        f.db.publish(&f.c, "console-broken-2", BROKEN, Some("p {}"))
            .await;
    wait_errored(other).await;
    let (a, b) = (f.broken.to_string(), other.to_string());
    let p = f
        .post(
            "/console/requeue",
            &[
                ("csrf", &token),
                ("id", &a),
                ("id", &b),
                ("id", &f.xss.to_string()),
            ],
        )
        .await;
    p.redirects_saying("Requeued+2");
    assert_eq!(f.console_transitions(other).await.len(), 1);
    wait_errored(f.broken).await;
    wait_errored(other).await;
    // Everything matching a prefix: the confirmation counts, the POST requeues as many.
    let confirm = f.get("/console/requeue-matching?doc=console-broken").await;
    assert!(
        confirm
            .body
            .contains("This requeues <strong>2 errored versions</strong>"),
        "{}",
        confirm.body
    );
    let p = f
        .post(
            "/console/requeue-matching",
            &[
                ("csrf", &confirm.csrf()),
                ("doc", "console-broken"),
                ("since", ""),
                ("until", ""),
                ("expected", "2"),
            ],
        )
        .await;
    p.redirects_saying("Requeued+2");
    assert_eq!(f.console_transitions(f.broken).await.len(), 3);
    let audit: Vec<(String, String, i32)> =
        f.c.query(
            "select actor, action, affected from postpub.audit order by id",
            &[],
        )
        .await
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let actor = "console:local as postgres".to_owned();
    assert_eq!(
        audit,
        vec![
            (actor.clone(), "requeue_versions".to_owned(), 1),
            (actor.clone(), "requeue_versions".to_owned(), 2),
            (actor, "requeue_matching".to_owned(), 2),
        ]
    );
    // The overview lists the actions.
    assert!(f.get("/console").await.body.contains("requeue_matching"));
    f.daemon.stop().await;
}

/// The document page lists the document's events whether delivered or not (they are read
/// from two partial indexes, sql/0009_hot_path.sql), newest first.
#[tokio::test]
async fn the_document_page_lists_delivered_and_undelivered_events_newest_first() {
    let f = setup(|_| {}).await;
    // One more published version after the fixture's have settled: a second event.
    let v =
        f.db.publish(&f.c, "console-ok", "<div><p>third</p></div>", Some("p {}"))
            .await;
    wait_until(
        Duration::from_secs(20),
        "the third version current",
        || async { f.db.state(&f.c, v).await == "current" },
    )
    .await;
    let ids: Vec<(i64, uuid::Uuid)> =
        f.c.query(
            "select id, event_id from postpub.outbox where document = 'console-ok' order by id",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(ids.len() >= 2, "two publishes, two events: {ids:?}");
    f.c.execute(
        "update postpub.outbox set delivered_at = now() where id = $1",
        &[&ids[0].0],
    )
    .await
    .expect("deliver the oldest");
    let page = f.get("/console/document?name=console-ok").await;
    let at = |e: &uuid::Uuid| {
        page.body
            .find(&e.to_string())
            .unwrap_or_else(|| panic!("event {e} missing from the page: {}", page.body))
    };
    let (oldest, newest) = (at(&ids[0].1), at(&ids[ids.len() - 1].1));
    assert!(newest < oldest, "newest first");
    f.daemon.stop().await;
}

#[tokio::test]
async fn a_parked_event_is_requeued_from_the_document_page() {
    let f = setup(|_| {}).await;
    let event: uuid::Uuid = f
        .c
        .query_one(
            "update postpub.outbox set parked_at = now(), attempts = 3, last_error = 'sink hook: refused (422)'
              where id = (select max(id) from postpub.outbox where document = 'console-ok') returning event_id",
            &[],
        )
        .await
        .expect("park an event")
        .get(0);
    let page = f.get("/console/document?name=console-ok").await;
    assert!(
        page.body.contains("sink hook: refused (422)"),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains(&format!("name=\"event\" value=\"{event}\"")));
    assert!(
        f.get("/console").await.body.contains(&event.to_string()),
        "overview lists it"
    );
    let id = event.to_string();
    let p = f
        .post(
            "/console/requeue-event",
            &[
                ("csrf", &page.csrf()),
                ("event", &id),
                ("back", "/console/document?name=console-ok"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let parked: Option<String> =
        f.c.query_one(
            "select parked_at::text from postpub.outbox where event_id = $1",
            &[&event],
        )
        .await
        .expect("event")
        .get(0);
    assert_eq!(parked, None);
    let audit: (String, String) =
        f.c.query_one("select action, target from postpub.audit", &[])
            .await
            .map(|r| (r.get(0), r.get(1)))
            .expect("audit");
    assert_eq!(audit, ("requeue_event".to_owned(), id.clone()));
    // Again: no longer parked, a 409 that says why.
    let p = f
        .post(
            "/console/requeue-event",
            &[("csrf", &page.csrf()), ("event", &id)],
        )
        .await;
    assert_eq!(p.status, 409, "{}", p.body);
    assert!(p.body.contains("not parked"), "{}", p.body);
    f.daemon.stop().await;
}

fn basic(user: &str, password: &str) -> String {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {v}")
}

#[tokio::test]
async fn read_only_users_read_operators_requeue_and_strangers_get_401() {
    let hash = postpub::console::access::hash_password("correct horse").expect("hash");
    let f = setup(|cfg| {
        cfg.console.operator_token = "operator-token-0123456789".to_owned();
        cfg.console.users = vec![ConsoleUser {
            name: "alice".to_owned(),
            password_hash: hash,
            role: ConsoleRole::ReadOnly,
        }];
    })
    .await;
    let stranger = f.get("/console").await;
    assert_eq!(stranger.status, 401);
    assert!(stranger.header("www-authenticate").starts_with("Basic"));
    assert_eq!(
        f.get_as("/console", Some(&basic("alice", "wrong")))
            .await
            .status,
        401
    );
    let alice = basic("alice", "correct horse");
    let page = f
        .get_as("/console/versions?state=errored", Some(&alice))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("alice (read-only)"));
    assert!(
        !page.body.contains("Requeue selected"),
        "no requeue for read-only"
    );
    // Even with her own valid token, a read-only user cannot requeue.
    let csrf = f
        .get_as("/console/document?name=console-ok", Some(&alice))
        .await;
    assert!(
        !csrf.body.contains("name=\"csrf\""),
        "no forms to post for read-only"
    );
    let op = "Bearer operator-token-0123456789";
    let op_page = f.get_as("/console/versions?state=errored", Some(op)).await;
    assert!(op_page.body.contains("operator-token (operator)"));
    let id = f.broken.to_string();
    // A token is bound to who it was issued to: the operator's token does not work for alice.
    let p = f
        .post_as(
            "/console/requeue",
            &[("csrf", &op_page.csrf()), ("one", &id)],
            Some(&alice),
        )
        .await;
    assert_eq!(p.status, 403);
    assert_eq!(f.db.state(&f.c, f.broken).await, "errored");
    let p = f
        .post_as(
            "/console/requeue",
            &[("csrf", &op_page.csrf()), ("one", &id)],
            Some(op),
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        f.console_transitions(f.broken).await,
        vec!["console:operator-token as postgres"]
    );
    f.daemon.stop().await;
}

#[tokio::test]
async fn off_loopback_the_console_needs_credentials() {
    let mut cfg = Config::default();
    cfg.http.listen = "0.0.0.0:9187".to_owned();
    let e = cfg
        .validate()
        .expect_err("no credentials off loopback")
        .to_string();
    assert!(e.contains("console") && e.contains("0.0.0.0:9187"), "{e}");
    cfg.console.read_token = "short".to_owned();
    let e = cfg.validate().expect_err("short token").to_string();
    assert!(e.contains("console.read_token"), "{e}");
    cfg.console.read_token = "a-long-enough-read-token".to_owned();
    cfg.validate().expect("a token is enough");
    cfg.console = Default::default();
    cfg.console.enabled = false;
    cfg.validate().expect("a disabled console needs nothing");
    cfg.console.enabled = true;
    cfg.http.listen = "[::1]:9187".to_owned();
    cfg.validate().expect("loopback needs nothing");
}

#[tokio::test]
async fn live_updates_arrive_as_server_sent_events() {
    let f = setup(|_| {}).await;
    let mut r = f
        .http
        .get(format!("{}/console/live", f.base))
        .send()
        .await
        .expect("open the stream");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ctype")
        .starts_with("text/event-stream"));
    let id =
        f.db.publish(&f.c, "console-live", "<p>live</p>", Some("p {}"))
            .await;
    let mut seen = String::new();
    let got = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = r.chunk().await.expect("chunk") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(&format!("\"version_id\":{id}"))
                && seen.contains("\"state\":\"current\"")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "stream so far: {seen}");
    assert!(seen.contains("event: update"), "{seen}");
    // An open page does not hold the daemon up: its stream ends when the daemon stops
    // (rather than being cut off after the HTTP server's 5 s grace).
    let started = std::time::Instant::now();
    f.daemon.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopping took {:?} with a live stream open",
        started.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = r.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the live stream stayed open after the daemon stopped"
    );
}
