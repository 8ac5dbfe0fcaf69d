//! The Kafka sink: produces each event with key = its document, value = the event JSON and
//! headers `event_id` and `kind`, and counts it delivered once the broker acknowledged it.
//!
//! The producer is librdkafka's (through `rdkafka`), set up for what the outbox promises:
//! * idempotence on, `acks=all`: a send that librdkafka retries after a lost acknowledgement
//!   is written once, in order;
//! * `partitioner=murmur2_random`: keyed messages go to `murmur2(key) % partitions`, the Java
//!   client's default, so other producers of the same documents pick the same partitions and
//!   every event of a document lands in one partition, in the order the relay sends them
//!   (one at a time per document);
//! * `message.timeout.ms = ack_timeout`: a send that gets no acknowledgement in time
//!   (broker down, unreachable, refusing our credentials) fails transiently and the relay
//!   retries it with backoff. Connection and authentication failures arrive in librdkafka's
//!   error callback, not with the message; the last one is added to the timeout's reason so
//!   `last_error` says *why* (e.g. "SASL authentication failed").
//!
//! A send the relay repeats (after a timeout, or a relay that died before recording) is a new
//! message to Kafka: consumers deduplicate on the `event_id` header. Too-large messages are
//! refused by librdkafka itself (`max_message_bytes`, like the broker's `message.max.bytes`)
//! or by the broker, and parked.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Ack, Error, Invalid, Outgoing, Sink, SinkError};
use crate::config::KafkaSinkConfig;
use futures_util::future::BoxFuture;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// SASL mechanisms librdkafka implements without Kerberos.
const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Longest topic name Kafka accepts.
const MAX_TOPIC: usize = 249;

/// Checks a `kind = "kafka"` table; the error names the key within the table.
pub fn validate(k: &KafkaSinkConfig) -> Result<(), Invalid> {
    let bad = |key: &'static str, problem: String| Err(Invalid::new(key, problem));
    if k.brokers.trim().is_empty() {
        return bad("brokers", "must be set (e.g. \"127.0.0.1:9092\")".into());
    }
    for b in k.brokers.split(',').map(str::trim) {
        let ok = b
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return bad(
                "brokers",
                format!("must be comma-separated host:port pairs, not {b:?}"),
            );
        }
    }
    for kind in ["published", "deleted"] {
        if let Err(problem) = check_topic(&render_topic(&k.topic, kind)) {
            return bad("topic", format!("{:?} {problem}", k.topic));
        }
    }
    if k.ack_timeout < Duration::from_secs(1) || k.ack_timeout > Duration::from_secs(3600) {
        return bad("ack_timeout", "must be between 1s and 1h".into());
    }
    if !(1000..=1_000_000_000).contains(&k.max_message_bytes) {
        return bad(
            "max_message_bytes",
            "must be between 1000 and 1000000000".into(),
        );
    }
    if let Some(path) = &k.tls_ca_file {
        if let Err(e) = std::fs::File::open(path) {
            return bad(
                "tls_ca_file",
                format!("cannot read {}: {e}", path.display()),
            );
        }
    }
    match (&k.sasl_mechanism, &k.sasl_credentials_file) {
        (None, None) => {}
        (Some(m), Some(path)) => {
            if !MECHANISMS.contains(&m.as_str()) {
                return bad(
                    "sasl_mechanism",
                    format!("must be one of {}, not {m:?}", MECHANISMS.join(", ")),
                );
            }
            read_credentials(path).map_err(|p| Invalid::new("sasl_credentials_file", p))?;
        }
        (Some(_), None) => {
            return bad(
                "sasl_credentials_file",
                "must be set with sasl_mechanism (a file: user name, then password)".into(),
            )
        }
        (None, Some(_)) => {
            return bad(
                "sasl_mechanism",
                format!(
                    "must be set with sasl_credentials_file ({})",
                    MECHANISMS.join(", ")
                ),
            )
        }
    }
    Ok(())
}

/// Why `topic` is not a Kafka topic name, if it is not one.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > MAX_TOPIC || topic == "." || topic == ".." {
        return Err(format!("must give a topic of 1 to {MAX_TOPIC} characters"));
    }
    match topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        Some(c) => Err(format!(
            "contains {c:?}: topics are letters, digits, '.', '_' and '-' (placeholder: {{kind}})"
        )),
        None => Ok(()),
    }
}

/// The topic of an event of `kind`.
pub fn render_topic(template: &str, kind: &str) -> String {
    template.replace("{kind}", kind)
}

/// (user, password) from a credentials file: two lines, surrounding whitespace ignored.
fn read_credentials(path: &std::path::Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next(), lines.next()) {
        (Some(user), Some(password), None) => Ok((user.to_owned(), password.to_owned())),
        _ => Err(format!(
            "{} must hold two lines: the user name, then the password",
            path.display()
        )),
    }
}

/// librdkafka's callbacks: its log goes to tracing, its errors (connection refused,
/// authentication failed, …) are kept for the reason of the next failed delivery.
#[derive(Clone)]
struct Context {
    sink: String,
    last_error: Arc<Mutex<Option<(Instant, String)>>>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // Failures also reach `error`, once per cause; the log repeats them per reconnect.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(sink = %self.sink, facility = fac, "librdkafka: {message}")
            }
            _ => tracing::debug!(sink = %self.sink, facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let line = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_owned()
        };
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_none_or(|(_, l)| *l != line) {
            tracing::warn!(sink = %self.sink, error = %line, "kafka client error");
        }
        // "All brokers are down" follows the error that says why (refused, authentication,
        // certificate); keep that one.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) && last.is_some() {
            return;
        }
        *last = Some((Instant::now(), line));
    }
}

type Client = FutureProducer<Context>;

/// The Kafka sink.
pub struct KafkaSink {
    name: String,
    cfg: KafkaSinkConfig,
    /// librdkafka's settings, kept to build a new producer after a fatal error.
    client_config: ClientConfig,
    context: Context,
    producer: Mutex<Arc<Client>>,
}

impl KafkaSink {
    /// A sink for `cfg` (validated by [`validate`]); the producer connects in the background.
    pub fn new(name: String, cfg: KafkaSinkConfig) -> Result<Self, Error> {
        let setup = |reason: String| Error::Setup {
            sink: name.clone(),
            reason,
        };
        let client_config = client_config(&cfg).map_err(&setup)?;
        let context = Context {
            sink: name.clone(),
            last_error: Arc::new(Mutex::new(None)),
        };
        let producer = create(&client_config, &context).map_err(setup)?;
        Ok(Self {
            name,
            cfg,
            client_config,
            context,
            producer: Mutex::new(Arc::new(producer)),
        })
    }

    fn producer(&self) -> Arc<Client> {
        self.producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a fatal error, or one that leaves the idempotent producer's id or epoch unusable
    /// (the broker fenced it or forgot it, e.g. after an epoch bump following a timeout),
    /// the producer accepts nothing more: the next send gets a new one. Returns the reason
    /// when the producer was replaced.
    fn replace_if_broken(
        &self,
        used: &Arc<Client>,
        code: Option<RDKafkaErrorCode>,
    ) -> Option<String> {
        let reason = match used.client().fatal_error() {
            Some((_, reason)) => reason,
            None if matches!(
                code,
                Some(
                    RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::UnknownProducerId
                        | RDKafkaErrorCode::OutOfOrderSequenceNumber
                        | RDKafkaErrorCode::Fatal
                )
            ) =>
            {
                "the broker no longer accepts this producer's id or epoch".to_owned()
            }
            None => return None,
        };
        let mut current = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&current, used) {
            match create(&self.client_config, &self.context) {
                Ok(p) => {
                    tracing::warn!(sink = %self.name, reason = %reason, "kafka producer unusable; a new one takes over");
                    *current = Arc::new(p);
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot create a new kafka producer")
                }
            }
        }
        Some(reason)
    }

    /// The client error of the last `ack_timeout`, if any.
    fn recent_client_error(&self) -> Option<String> {
        let last = self
            .context
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((at, line)) if at.elapsed() <= self.cfg.ack_timeout * 2 => Some(line.clone()),
            _ => None,
        }
    }

    async fn produce(&self, event: &Outgoing) -> Result<Ack, SinkError> {
        let topic = render_topic(&self.cfg.topic, &event.kind);
        let payload = event.json_for(self.cfg.include_body);
        let id = event.event_id.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event_id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "kind",
                value: Some(event.kind.as_str()),
            });
        let record = FutureRecord::to(&topic)
            .key(event.document.as_bytes())
            .payload(payload.as_ref())
            .headers(headers);
        let producer = self.producer();
        match producer.send(record, self.cfg.ack_timeout).await {
            Ok(_) => Ok(Ack { duplicate: false }),
            Err((e, _)) => {
                let replaced = self.replace_if_broken(&producer, e.rdkafka_error_code());
                Err(self.classify(&e, &topic, replaced))
            }
        }
    }

    /// Sorts a failed send: only "too large" can never succeed.
    fn classify(&self, e: &KafkaError, topic: &str, replaced: Option<String>) -> SinkError {
        let code = e.rdkafka_error_code();
        let what = format!("producing to Kafka topic {topic}: {e}");
        match code {
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge,
            ) => SinkError::Permanent(format!(
                "{what} (max_message_bytes = {})",
                self.cfg.max_message_bytes
            )),
            // No acknowledgement in time: the client's own errors say why (broker down,
            // authentication refused, certificate not trusted).
            Some(RDKafkaErrorCode::MessageTimedOut) => {
                let why = replaced
                    .or_else(|| self.recent_client_error())
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                SinkError::Transient(format!("{what}{why}"))
            }
            _ => {
                let why = replaced.map(|r| format!(" ({r})")).unwrap_or_default();
                SinkError::Transient(format!("{what}{why}"))
            }
        }
    }
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a self, event: &'a Outgoing) -> BoxFuture<'a, Result<Ack, SinkError>> {
        Box::pin(self.produce(event))
    }
}

fn create(config: &ClientConfig, context: &Context) -> Result<Client, String> {
    config
        .create_with_context(context.clone())
        .map_err(|e| format!("cannot create the Kafka producer: {e}"))
}

/// librdkafka's settings for `cfg` (see the module docs for why each is set).
fn client_config(cfg: &KafkaSinkConfig) -> Result<ClientConfig, String> {
    let ms = |d: Duration| d.as_millis().to_string();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.trim())
        .set("client.id", "postpub")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", ms(cfg.ack_timeout))
        .set("message.max.bytes", cfg.max_message_bytes.to_string())
        .set("linger.ms", "5")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        .set(
            "socket.connection.setup.timeout.ms",
            ms(cfg.ack_timeout.max(Duration::from_secs(1))),
        );
    let tls = cfg.tls || cfg.tls_ca_file.is_some();
    let protocol = match (tls, cfg.sasl_mechanism.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    c.set("security.protocol", protocol);
    if let Some(ca) = &cfg.tls_ca_file {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    if let (Some(mechanism), Some(path)) = (&cfg.sasl_mechanism, &cfg.sasl_credentials_file) {
        let (user, password) = read_credentials(path)?;
        c.set("sasl.mechanism", mechanism)
            .set("sasl.username", user)
            .set("sasl.password", password);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(brokers: &str, topic: &str) -> KafkaSinkConfig {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            ..Default::default()
        }
    }

    #[test]
    fn brokers_and_topics_are_checked() {
        assert!(validate(&sink("127.0.0.1:9092", "postpub")).is_ok());
        assert!(validate(&sink("a:1, b:2", "events.{kind}")).is_ok());
        assert_eq!(
            validate(&sink("", "t")).map_err(|e| e.field),
            Err("brokers")
        );
        assert_eq!(
            validate(&sink("host", "t")).map_err(|e| e.field),
            Err("brokers")
        );
        assert_eq!(
            validate(&sink("h:1", "a topic")).map_err(|e| e.field),
            Err("topic")
        );
        assert_eq!(
            validate(&sink("h:1", "x.{document}")).map_err(|e| e.field),
            Err("topic")
        );
        assert_eq!(render_topic("pp.{kind}", "deleted"), "pp.deleted");
    }

    #[test]
    fn sasl_needs_a_mechanism_and_a_two_line_credentials_file() {
        let dir = std::env::temp_dir().join(format!("postpub-kafka-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good");
        std::fs::write(&good, "alice\ns3cret:x\n").expect("write");
        let bad = dir.join("bad");
        std::fs::write(&bad, "alice:s3cret\n").expect("write");
        let with = |m: Option<&str>, f: Option<&std::path::PathBuf>| {
            let mut k = sink("h:1", "t");
            k.sasl_mechanism = m.map(str::to_owned);
            k.sasl_credentials_file = f.cloned();
            validate(&k).map_err(|e| e.field)
        };
        assert_eq!(with(Some("SCRAM-SHA-256"), Some(&good)), Ok(()));
        assert_eq!(
            read_credentials(&good),
            Ok(("alice".into(), "s3cret:x".into()))
        );
        assert_eq!(
            with(Some("SCRAM-SHA-256"), Some(&bad)),
            Err("sasl_credentials_file")
        );
        assert_eq!(with(Some("GSSAPI"), Some(&good)), Err("sasl_mechanism"));
        assert_eq!(with(Some("PLAIN"), None), Err("sasl_credentials_file"));
        assert_eq!(with(None, Some(&good)), Err("sasl_mechanism"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
