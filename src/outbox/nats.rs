//! The NATS JetStream sink: publishes each event with `Nats-Msg-Id` = its event id and waits
//! for the stream's PubAck, so JetStream drops an event sent twice (within the stream's
//! duplicate window) and says so (`duplicate: true`).
//!
//! Subjects come from a template (`postpub.{kind}.{document}` by default). Document names
//! are free text, NATS subject tokens are not, so `{document}` is escaped ([`escape_token`]):
//! ASCII letters, digits and `-_/~:=+@!,` stay as they are; every other byte of the UTF-8
//! name (space, `.`, `*`, `>`, `%`, `$`, control characters, non-ASCII, …) becomes `%XX`
//! (uppercase hex). The escaping is reversible and never produces an empty token.
//!
//! The connection is made on first use and kept; async-nats reconnects it by itself. While
//! it is down, a delivery waits up to `ack_timeout` for it to come back, then fails
//! transiently. The stream is created when missing (`create_stream`), with the template's
//! literal prefix as its subjects (`postpub.>`) and `duplicate_window`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, OnceCell};

use super::{error_chain, Ack, Invalid, Outgoing, Sink, SinkError};
use crate::config::{out_of_bounds, NatsSinkConfig, HOUR, MAX_BACKOFF};

/// Longest subject sent. The server's default `max_control_line` is 4 KiB and a longer
/// publish line makes it close the connection, which would fail every event in flight
/// over and over; an event with a subject this long is parked instead.
pub const MAX_SUBJECT_BYTES: usize = 2048;

/// After a failed connect or stream setup, deliveries fail at once with the same error for
/// this long instead of each trying again (a round sends to many documents at once, and
/// against an unreachable host every try would wait for its own timeout).
const SETUP_RETRY: Duration = Duration::from_secs(1);

/// Placeholders a subject template may use.
const PLACEHOLDERS: &[&str] = &["{kind}", "{document}", "{version}"];

/// The NATS sink.
pub struct NatsSink {
    /// Name deliveries are tracked under.
    name: String,
    /// `[[outbox.sinks]]` keys.
    cfg: NatsSinkConfig,
    /// Made on first use; reconnects by itself afterwards.
    conn: OnceCell<Connection>,
    /// The stream is known to exist (checked or created once, again after "no stream").
    stream_ready: AtomicBool,
    /// One stream check at a time.
    stream_lock: Mutex<()>,
    /// The last failed connect or stream setup, and when (see [`SETUP_RETRY`]).
    setup_failure: std::sync::Mutex<Option<(Instant, SinkError)>>,
}

struct Connection {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl NatsSink {
    /// A sink for `cfg` (validated by `Config::validate`); connects on first delivery.
    pub fn new(name: String, cfg: NatsSinkConfig) -> Self {
        Self {
            name,
            cfg,
            conn: OnceCell::new(),
            stream_ready: AtomicBool::new(false),
            stream_lock: Mutex::new(()),
            setup_failure: std::sync::Mutex::new(None),
        }
    }

    /// The setup failure of less than [`SETUP_RETRY`] ago, if any.
    fn recent_failure(&self) -> Result<(), SinkError> {
        let last = self.setup_failure.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((at, e)) if at.elapsed() < SETUP_RETRY => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn setup_failed(&self, e: SinkError) -> SinkError {
        *self.setup_failure.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), e.clone()));
        e
    }

    /// Authentication and TLS from the sink's configuration. The files were readable when
    /// the configuration was validated; one that became unreadable since is a setup failure
    /// naming the file, retried like a refused connection.
    async fn security(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, SinkError> {
        let unreadable = |what: &str, path: &std::path::Path, e: std::io::Error| {
            SinkError::Transient(format!(
                "cannot read the NATS {what} {}: {e}",
                path.display()
            ))
        };
        if let Some(path) = &self.cfg.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| unreadable("credentials file", path, e))?;
        }
        if let Some(path) = &self.cfg.nkey_seed_file {
            let seed =
                std::fs::read_to_string(path).map_err(|e| unreadable("NKey seed file", path, e))?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &self.cfg.tls_ca_file {
            options = options.add_root_certificates(path.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cfg.tls_cert_file, &self.cfg.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.cfg.tls_required))
    }

    async fn connection(&self) -> Result<&Connection, SinkError> {
        self.conn
            .get_or_try_init(|| async {
                self.recent_failure()?;
                let addrs: Vec<String> = self
                    .cfg
                    .url
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .collect();
                let sink = self.name.clone();
                let options = self
                    .security(async_nats::ConnectOptions::new())
                    .await
                    .map_err(|e| self.setup_failed(e))?;
                let client = options
                    .name("postpub")
                    .connection_timeout(self.cfg.ack_timeout)
                    .max_reconnects(None)
                    .reconnect_delay_callback(|attempt| {
                        let exp = u32::try_from(attempt.min(5)).unwrap_or(5);
                        Duration::from_millis(100 * 2u64.pow(exp)).min(Duration::from_secs(2))
                    })
                    .event_callback(move |event| {
                        let sink = sink.clone();
                        async move {
                            match event {
                                async_nats::Event::Connected => {
                                    tracing::info!(sink = %sink, "nats connection (re)established")
                                }
                                async_nats::Event::Disconnected => {
                                    tracing::warn!(sink = %sink, "nats connection lost; reconnecting")
                                }
                                other => tracing::debug!(sink = %sink, event = %other, "nats event"),
                            }
                        }
                    })
                    .connect(addrs)
                    .await
                    .map_err(|e| {
                        self.setup_failed(SinkError::Transient(format!(
                            "cannot connect to NATS at {}: {}",
                            self.cfg.url,
                            error_chain(&e)
                        )))
                    })?;
                let mut js = jetstream::new(client.clone());
                js.set_timeout(self.cfg.ack_timeout);
                tracing::info!(sink = %self.name, url = %self.cfg.url, "connected to nats");
                Ok(Connection { client, js })
            })
            .await
    }

    /// Waits up to `ack_timeout` for a lost connection to come back.
    async fn connected(&self, conn: &Connection) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.cfg.ack_timeout;
        while conn.client.connection_state() != State::Connected {
            if Instant::now() >= deadline {
                return Err(SinkError::Transient(format!(
                    "not connected to NATS at {} (reconnecting)",
                    self.cfg.url
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Makes sure the stream exists (creating it when configured to), once.
    async fn ensure_stream(&self, conn: &Connection) -> Result<(), SinkError> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one = self.stream_lock.lock().await;
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.recent_failure()?;
        self.setup_stream(conn)
            .await
            .map_err(|e| self.setup_failed(e))?;
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn setup_stream(&self, conn: &Connection) -> Result<(), SinkError> {
        let missing = |e: &jetstream::context::GetStreamError| {
            matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
        };
        match conn.js.get_stream(&self.cfg.stream).await {
            Ok(_) => {}
            Err(e) if missing(&e) => {
                let Some(subject) =
                    stream_subject(&self.cfg.subject).filter(|_| self.cfg.create_stream)
                else {
                    return Err(SinkError::Transient(format!(
                        "JetStream stream {} does not exist ({}) and create_stream is false: create it with subjects matching {}",
                        self.cfg.stream,
                        error_chain(&e),
                        self.cfg.subject
                    )));
                };
                conn.js
                    .create_stream(stream::Config {
                        name: self.cfg.stream.clone(),
                        subjects: vec![subject.clone()],
                        duplicate_window: self.cfg.duplicate_window,
                        description: Some("postpub outbox events".to_owned()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        SinkError::Transient(format!(
                            "cannot create JetStream stream {} for {subject}: {}",
                            self.cfg.stream,
                            error_chain(&e)
                        ))
                    })?;
                tracing::info!(
                    sink = %self.name,
                    stream = %self.cfg.stream,
                    subjects = %subject,
                    duplicate_window = %humantime::format_duration(self.cfg.duplicate_window),
                    "jetstream stream created"
                );
            }
            Err(e) => {
                return Err(SinkError::Transient(format!(
                    "cannot look up JetStream stream {}: {}",
                    self.cfg.stream,
                    error_chain(&e)
                )))
            }
        }
        Ok(())
    }

    async fn publish(&self, event: &Outgoing) -> Result<Ack, SinkError> {
        // Problems with the event itself come first: they are permanent wherever NATS is.
        let subject = render(
            &self.cfg.subject,
            &event.kind,
            &event.document,
            event.version,
        )
        .map_err(SinkError::Permanent)?;
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(SinkError::Permanent(format!(
                "subject is {} bytes, more than {MAX_SUBJECT_BYTES} (document name too long for a NATS subject)",
                subject.len()
            )));
        }
        let payload = event.json_for(self.cfg.include_body).clone();
        let conn = self.connection().await?;
        self.connected(conn).await?;
        let max = conn.client.server_info().max_payload;
        // Headers (Nats-Msg-Id) count towards max_payload too; 128 bytes covers them.
        if max > 0 && payload.len() + 128 > max {
            return Err(SinkError::Permanent(format!(
                "event JSON is {} bytes, more than the NATS server's max_payload of {max} bytes",
                payload.len()
            )));
        }
        self.ensure_stream(conn).await?;
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(event.event_id.to_string());
        let ack = conn
            .js
            .send_publish(subject.clone(), msg)
            .await
            .map_err(|e| self.classify(&e, &subject))?
            .await
            .map_err(|e| self.classify(&e, &subject))?;
        Ok(Ack {
            duplicate: ack.duplicate,
        })
    }

    /// Sorts a publish failure: only "the stream will never take this message" is permanent.
    fn classify(&self, e: &jetstream::context::PublishError, subject: &str) -> SinkError {
        let what = format!("publishing to {subject}: {}", error_chain(e));
        match e.kind() {
            PublishErrorKind::StreamNotFound => {
                // Deleted under us, or the template's subjects are not the stream's: look
                // again (and create it, if configured) before the next try.
                self.stream_ready.store(false, Ordering::Release);
                SinkError::Transient(format!(
                    "{what} (no JetStream stream captures this subject; expected stream {})",
                    self.cfg.stream
                ))
            }
            PublishErrorKind::Other => {
                let js_error = std::error::Error::source(e)
                    .and_then(|s| s.downcast_ref::<jetstream::Error>())
                    .map(jetstream::Error::error_code);
                if js_error == Some(jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) {
                    SinkError::Permanent(what)
                } else {
                    SinkError::Transient(what)
                }
            }
            _ => SinkError::Transient(what),
        }
    }
}

impl Sink for NatsSink {
    fn deliver<'a>(&'a self, event: &'a Outgoing) -> BoxFuture<'a, Result<Ack, SinkError>> {
        Box::pin(self.publish(event))
    }
}

/// Checks a `kind = "nats"` table: values that parse but cannot work, files that cannot be
/// read, and a seed the client would only report as "failed signing nonce".
pub fn validate(n: &NatsSinkConfig) -> Result<(), Invalid> {
    let ms = Duration::from_millis;
    for (field, value, min, max) in [
        (
            "duplicate_window",
            n.duplicate_window,
            Duration::ZERO,
            MAX_BACKOFF,
        ),
        ("ack_timeout", n.ack_timeout, ms(1), HOUR),
    ] {
        if let Some(problem) = out_of_bounds(value, min, max) {
            return Err(Invalid::new(field, problem));
        }
    }
    if n.url.trim().is_empty() {
        return Err(Invalid::new(
            "url",
            "must be set (e.g. \"nats://127.0.0.1:4222\")",
        ));
    }
    for part in n.url.split(',') {
        if let Err(e) = part.trim().parse::<async_nats::ServerAddr>() {
            return Err(Invalid::new(
                "url",
                format!("must be a NATS server URL: {part:?}: {e}"),
            ));
        }
    }
    let stream_ok = !n.stream.is_empty()
        && n.stream.len() <= 255
        && !n
            .stream
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c));
    if !stream_ok {
        return Err(Invalid::new(
            "stream",
            "must be a JetStream stream name: not empty, without spaces, '.', '*', '>', '/' or '\\'",
        ));
    }
    check_template(&n.subject).map_err(|problem| Invalid::new("subject", problem))?;
    if n.create_stream && stream_subject(&n.subject).is_none() {
        return Err(Invalid::new(
            "subject",
            "must start with a literal token (like \"postpub.\") when create_stream is true, so the stream's subjects can be derived from it",
        ));
    }
    if n.create_stream && n.duplicate_window.is_zero() {
        return Err(Invalid::new("duplicate_window", "must be more than 0s"));
    }
    validate_auth(n)
}

/// The credential and TLS files: allowed together, readable, and a seed that is one.
fn validate_auth(n: &NatsSinkConfig) -> Result<(), Invalid> {
    if n.credentials_file.is_some() && n.nkey_seed_file.is_some() {
        return Err(Invalid::new(
            "nkey_seed_file",
            "cannot be used together with credentials_file (a .creds file holds its own seed)",
        ));
    }
    if n.tls_cert_file.is_some() != n.tls_key_file.is_some() {
        return Err(Invalid::new(
            "tls_cert_file",
            "tls_cert_file and tls_key_file go together (the client certificate and its key)",
        ));
    }
    let unreadable = |field, path: &std::path::Path, e| {
        Invalid::new(field, format!("cannot read {}: {e}", path.display()))
    };
    for (field, path) in [
        ("credentials_file", &n.credentials_file),
        ("tls_ca_file", &n.tls_ca_file),
        ("tls_cert_file", &n.tls_cert_file),
        ("tls_key_file", &n.tls_key_file),
    ] {
        if let Some(path) = path {
            std::fs::File::open(path).map_err(|e| unreadable(field, path, e))?;
        }
    }
    if let Some(path) = &n.nkey_seed_file {
        // The seed itself is checked here: with a bad one the NATS client only says
        // "failed signing nonce".
        let seed =
            std::fs::read_to_string(path).map_err(|e| unreadable("nkey_seed_file", path, e))?;
        if let Err(e) = nkeys::KeyPair::from_seed(seed.trim()) {
            return Err(Invalid::new(
                "nkey_seed_file",
                format!("{} does not hold an NKey seed (SU…): {e}", path.display()),
            ));
        }
    }
    Ok(())
}

/// Escapes a document name into one NATS subject token (see the module docs).
pub fn escape_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_/~:=+@!,".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks a subject template; the error says what is wrong.
pub fn check_template(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Err("must not be empty".to_owned());
    }
    for token in template.split('.') {
        if token.is_empty() {
            return Err(format!(
                "{template:?} has an empty token (leading, trailing or double '.')"
            ));
        }
        let mut rest = token;
        while let Some(open) = rest.find('{') {
            let literal = &rest[..open];
            check_literal(template, literal)?;
            let Some(len) = rest[open..].find('}') else {
                return Err(format!("{template:?} has an unclosed '{{'"));
            };
            let placeholder = &rest[open..open + len + 1];
            if !PLACEHOLDERS.contains(&placeholder) {
                return Err(format!(
                    "{template:?} uses unknown placeholder {placeholder} (known: {})",
                    PLACEHOLDERS.join(", ")
                ));
            }
            rest = &rest[open + len + 1..];
        }
        check_literal(template, rest)?;
    }
    Ok(())
}

fn check_literal(template: &str, literal: &str) -> Result<(), String> {
    match literal
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "*>{}".contains(*c))
    {
        Some(c) => Err(format!(
            "{template:?} contains {c:?}, which is not allowed in a NATS subject outside a placeholder"
        )),
        None => Ok(()),
    }
}

/// The subjects of a stream created for `template`: its leading literal tokens + `.>`
/// (`postpub.{kind}.{document}` → `postpub.>`); `None` when it starts with a placeholder.
pub fn stream_subject(template: &str) -> Option<String> {
    let literal: Vec<&str> = template
        .split('.')
        .take_while(|t| !t.contains('{'))
        .collect();
    if literal.is_empty() {
        None
    } else if literal.len() == template.split('.').count() {
        // No placeholder at all: every event goes to this one subject.
        Some(template.to_owned())
    } else {
        Some(format!("{}.>", literal.join(".")))
    }
}

/// The subject of one event.
pub fn render(
    template: &str,
    kind: &str,
    document: &str,
    version: Option<i64>,
) -> Result<String, String> {
    let mut subject = template
        .replace("{kind}", &escape_token(kind))
        .replace("{document}", &escape_token(document));
    if subject.contains("{version}") {
        let Some(v) = version else {
            return Err("the event has no version for the subject's {version}".to_owned());
        };
        subject = subject.replace("{version}", &v.to_string());
    }
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_nats_forbids_in_a_token_are_escaped() {
        assert_eq!(escape_token("physics/chapter-1"), "physics/chapter-1");
        assert_eq!(escape_token("a.b c*d>e"), "a%2Eb%20c%2Ad%3Ee");
        assert_eq!(escape_token("100%\t$x"), "100%25%09%24x");
        assert_eq!(escape_token("é"), "%C3%A9");
        for s in ["a.b", " ", "*", ">", "\n", "x.y.z", "%2E"] {
            let t = escape_token(s);
            assert!(!t.is_empty());
            assert!(
                !t.chars().any(|c| c.is_whitespace() || ".*>".contains(c)),
                "{s:?} -> {t:?}"
            );
        }
        // Reversible: "%2E" itself does not collide with ".".
        assert_ne!(escape_token("%2E"), escape_token("."));
    }

    #[test]
    fn the_default_template_renders_one_token_per_part() {
        let s =
            render("postpub.{kind}.{document}", "published", "my book.v2", None).expect("renders");
        assert_eq!(s, "postpub.published.my%20book%2Ev2");
        assert_eq!(s.split('.').count(), 3);
        assert_eq!(
            render("docs.{document}.v{version}", "deleted", "a", Some(7)).expect("renders"),
            "docs.a.v7"
        );
        assert!(render("docs.{version}", "deleted", "a", None).is_err());
    }

    #[test]
    fn templates_are_checked() {
        assert!(check_template("postpub.{kind}.{document}").is_ok());
        assert!(check_template("events.doc-{document}").is_ok());
        assert!(check_template("").is_err());
        assert!(check_template("postpub..{document}").is_err());
        assert!(check_template("postpub.{title}").is_err());
        assert!(check_template("postpub.*.{document}").is_err());
        assert!(check_template("post pub.{document}").is_err());
        assert!(check_template("postpub.{document").is_err());
    }

    #[test]
    fn a_created_stream_captures_the_templates_literal_prefix() {
        assert_eq!(
            stream_subject("postpub.{kind}.{document}").as_deref(),
            Some("postpub.>")
        );
        assert_eq!(
            stream_subject("acme.cms.{document}").as_deref(),
            Some("acme.cms.>")
        );
        assert_eq!(
            stream_subject("fixed.subject").as_deref(),
            Some("fixed.subject")
        );
        assert_eq!(stream_subject("{kind}.x"), None);
        assert_eq!(stream_subject("x{kind}.y"), None);
    }
}
