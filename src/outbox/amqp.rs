//! The AMQP 0.9.1 (RabbitMQ) sink: publishes each event to an exchange with publisher
//! confirms and counts it delivered once the broker confirmed it.
//!
//! Each message is persistent (`delivery_mode` 2), `mandatory` (a message no queue is bound
//! for comes back, and is a failure rather than a silent ack), with `message_id` = the event
//! id, `content_type` `application/json`, and headers `kind`, `document` and `event_id`.
//! Exchange and routing key come from templates; in the routing key `{document}` is escaped
//! into one dot-free word (as NATS subject tokens: `super::nats::escape_token`) so topic
//! bindings like `published.#` or `*.chapter-1` work whatever the document is called.
//!
//! Nothing is declared unless `declare = true`, which creates a durable topic exchange and a
//! durable queue bound to it with `#` (for simple setups).
//!
//! The connection and its confirm-mode channel are made on first use and made again after
//! they close (broker restart, network cut, a channel error). Failures are transient except
//! a message larger than the broker takes (the broker's `max_message_size`, or this sink's
//! `max_message_bytes`): that one is parked.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::nats::escape_token;
use super::{error_chain, Ack, Error, Invalid, Outgoing, Sink, SinkError};
use crate::config::AmqpSinkConfig;

/// Longest exchange name or routing key (AMQP short strings).
const MAX_SHORT: usize = 255;

/// After a failed connect, deliveries fail at once with the same error for this long (a
/// round sends to many documents at once; each would otherwise wait for its own connect).
const SETUP_RETRY: Duration = Duration::from_secs(1);

/// Checks a `kind = "amqp"` table; the error names the key within the table.
pub fn validate(a: &AmqpSinkConfig) -> Result<(), Invalid> {
    let bad = |key: &'static str, problem: String| Err(Invalid::new(key, problem));
    match a.url.parse::<lapin::uri::AMQPUri>() {
        _ if a.url.trim().is_empty() => {
            return bad(
                "url",
                "must be set (e.g. \"amqp://guest:guest@127.0.0.1:5672/%2f\")".into(),
            )
        }
        Ok(_) => {}
        Err(e) => return bad("url", format!("must be an amqp:// or amqps:// URL: {e}")),
    }
    for kind in ["published", "deleted"] {
        let exchange = a.exchange.replace("{kind}", kind);
        if exchange.contains(['{', '}']) || exchange.len() > MAX_SHORT {
            return bad(
                "exchange",
                format!("{:?} must be an exchange name of at most {MAX_SHORT} bytes (placeholder: {{kind}})", a.exchange),
            );
        }
        if a.declare && exchange.is_empty() {
            return bad(
                "exchange",
                "must not be empty with declare = true (the default exchange cannot be declared)"
                    .into(),
            );
        }
    }
    let probe = render_key(&a.routing_key, "published", "d", Some(1));
    if probe.contains(['{', '}']) {
        return bad(
            "routing_key",
            format!(
                "{:?} uses an unknown placeholder (known: {{kind}}, {{document}}, {{version}})",
                a.routing_key
            ),
        );
    }
    if a.declare && a.queue.trim().is_empty() {
        return bad("queue", "must be set with declare = true".into());
    }
    if a.ack_timeout < Duration::from_millis(100) || a.ack_timeout > Duration::from_secs(3600) {
        return bad("ack_timeout", "must be between 100ms and 1h".into());
    }
    if a.max_message_bytes < 1000 {
        return bad("max_message_bytes", "must be at least 1000".into());
    }
    if let Some(path) = &a.tls_ca_file {
        if let Err(e) = std::fs::read_to_string(path) {
            return bad(
                "tls_ca_file",
                format!("cannot read {}: {e}", path.display()),
            );
        }
    }
    Ok(())
}

/// The routing key of one event.
pub fn render_key(template: &str, kind: &str, document: &str, version: Option<i64>) -> String {
    let version = version.map(|v| v.to_string()).unwrap_or_default();
    template
        .replace("{kind}", kind)
        .replace("{document}", &escape_token(document))
        .replace("{version}", &version)
}

/// The AMQP sink.
pub struct AmqpSink {
    name: String,
    cfg: AmqpSinkConfig,
    /// CA for `amqps://`, read once.
    tls: OwnedTLSConfig,
    /// The open connection and its confirm channel, made on first use.
    link: Mutex<Option<Link>>,
    /// The last failed connect, and when (see [`SETUP_RETRY`]).
    setup_failure: std::sync::Mutex<Option<(Instant, SinkError)>>,
}

#[derive(Clone)]
struct Link {
    conn: std::sync::Arc<Connection>,
    channel: Channel,
}

impl AmqpSink {
    /// A sink for `cfg` (validated by [`validate`]); connects on first delivery.
    pub fn new(name: String, cfg: AmqpSinkConfig) -> Result<Self, Error> {
        let cert_chain = match &cfg.tls_ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| Error::Setup {
                sink: name.clone(),
                reason: format!("cannot read {}: {e}", path.display()),
            })?),
            None => None,
        };
        Ok(Self {
            name,
            cfg,
            tls: OwnedTLSConfig {
                identity: None,
                cert_chain,
            },
            link: Mutex::new(None),
            setup_failure: std::sync::Mutex::new(None),
        })
    }

    /// The open link, or a new one.
    async fn link(&self) -> Result<Link, SinkError> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.conn.status().connected() && l.channel.status().connected() {
                return Ok(l.clone());
            }
            if l.conn.status().connected() {
                // Only the channel closed (e.g. after a refused message): a new one.
                let channel = self.open_channel(&l.conn).await?;
                let l = Link {
                    conn: l.conn.clone(),
                    channel,
                };
                *link = Some(l.clone());
                return Ok(l);
            }
            *link = None;
        }
        {
            let last = self.setup_failure.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, e)) = &*last {
                if at.elapsed() < SETUP_RETRY {
                    return Err(e.clone());
                }
            }
        }
        match self.connect().await {
            Ok(l) => {
                *link = Some(l.clone());
                Ok(l)
            }
            Err(e) => {
                *self.setup_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<Link, SinkError> {
        let failed = |e: String| {
            SinkError::Transient(format!(
                "cannot connect to AMQP at {}: {e}",
                redact(&self.cfg.url)
            ))
        };
        let builder = lapin::DefaultConnectionBuilder::new()
            .map_err(|e| failed(error_chain(&e)))?
            .with_uri_str(self.cfg.url.clone())
            .with_properties(ConnectionProperties::default().with_connection_name("postpub".into()))
            .with_tls_config(self.tls.clone());
        let conn = tokio::time::timeout(self.cfg.ack_timeout, builder.connect())
            .await
            .map_err(|_| failed(format!("no answer within {:?}", self.cfg.ack_timeout)))?
            .map_err(|e| failed(error_chain(&e)))?;
        let conn = std::sync::Arc::new(conn);
        let channel = self.open_channel(&conn).await?;
        if self.cfg.declare {
            self.declare(&channel).await?;
        }
        tracing::info!(sink = %self.name, url = %redact(&self.cfg.url), "connected to amqp");
        Ok(Link { conn, channel })
    }

    async fn open_channel(&self, conn: &Connection) -> Result<Channel, SinkError> {
        let failed = |e: lapin::Error| {
            SinkError::Transient(format!("cannot open an AMQP channel: {}", error_chain(&e)))
        };
        let channel = conn.create_channel().await.map_err(failed)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed)?;
        Ok(channel)
    }

    /// `declare = true`: a durable topic exchange per exchange name, and the queue bound
    /// to each with `#`.
    async fn declare(&self, channel: &Channel) -> Result<(), SinkError> {
        let failed = |what: String, e: lapin::Error| {
            SinkError::Transient(format!("cannot declare {what}: {}", error_chain(&e)))
        };
        let durable = FieldTable::default();
        channel
            .queue_declare(
                self.cfg.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                durable.clone(),
            )
            .await
            .map_err(|e| failed(format!("queue {}", self.cfg.queue), e))?;
        let mut exchanges: Vec<String> = ["published", "deleted"]
            .iter()
            .map(|k| self.cfg.exchange.replace("{kind}", k))
            .collect();
        exchanges.dedup();
        for exchange in exchanges {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    lapin::ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    durable.clone(),
                )
                .await
                .map_err(|e| failed(format!("exchange {exchange}"), e))?;
            channel
                .queue_bind(
                    self.cfg.queue.as_str().into(),
                    exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    durable.clone(),
                )
                .await
                .map_err(|e| {
                    failed(
                        format!("the binding of {} to {exchange}", self.cfg.queue),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    async fn publish(&self, event: &Outgoing) -> Result<Ack, SinkError> {
        let exchange = self.cfg.exchange.replace("{kind}", &event.kind);
        let key = render_key(
            &self.cfg.routing_key,
            &event.kind,
            &event.document,
            event.version,
        );
        if key.len() > MAX_SHORT {
            return Err(SinkError::Permanent(format!(
                "routing key is {} bytes, more than AMQP's {MAX_SHORT} (document name too long)",
                key.len()
            )));
        }
        let payload = event.json_for(self.cfg.include_body);
        if payload.len() > self.cfg.max_message_bytes {
            return Err(SinkError::Permanent(format!(
                "event JSON is {} bytes, more than max_message_bytes = {}",
                payload.len(),
                self.cfg.max_message_bytes
            )));
        }
        let id = event.event_id.to_string();
        let mut headers = FieldTable::default();
        for (k, v) in [
            ("kind", event.kind.as_str()),
            ("document", event.document.as_str()),
            ("event_id", id.as_str()),
        ] {
            headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.as_str().into())
            .with_content_type("application/json".into())
            .with_app_id("postpub".into())
            .with_headers(headers);
        let link = self.link().await?;
        let to = format!("exchange {exchange:?} with routing key {key:?}");
        let confirm = tokio::time::timeout(self.cfg.ack_timeout, async {
            link.channel
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    properties,
                )
                .await?
                .await
        })
        .await
        .map_err(|_| {
            SinkError::Transient(format!(
                "publishing to {to}: no confirm within {:?}",
                self.cfg.ack_timeout
            ))
        })?
        .map_err(|e| classify(&e, &to))?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(Ack { duplicate: false }),
            Confirmation::Ack(Some(returned)) => Err(SinkError::Transient(format!(
                "publishing to {to}: returned unroutable ({} {}): no queue is bound for it",
                returned.reply_code, returned.reply_text
            ))),
            Confirmation::Nack(_) => Err(SinkError::Transient(format!(
                "publishing to {to}: the broker refused it (nack)"
            ))),
        }
    }
}

/// Sorts a failed publish: only "larger than the broker's max size" can never succeed.
fn classify(e: &lapin::Error, to: &str) -> SinkError {
    let what = format!("publishing to {to}: {}", error_chain(e));
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if amqp.get_id() == 406 && amqp.get_message().as_str().contains("max size") =>
        {
            SinkError::Permanent(what)
        }
        _ => SinkError::Transient(what),
    }
}

/// The URL without its password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Sink for AmqpSink {
    fn deliver<'a>(&'a self, event: &'a Outgoing) -> BoxFuture<'a, Result<Ack, SinkError>> {
        Box::pin(self.publish(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(url: &str) -> AmqpSinkConfig {
        AmqpSinkConfig {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn urls_and_templates_are_checked() {
        assert!(validate(&sink("amqp://guest:guest@127.0.0.1:5672/%2f")).is_ok());
        assert_eq!(validate(&sink("")).map_err(|e| e.field), Err("url"));
        assert_eq!(
            validate(&sink("http://h/")).map_err(|e| e.field),
            Err("url")
        );
        let mut s = sink("amqp://h");
        s.routing_key = "{title}".into();
        assert_eq!(validate(&s).map_err(|e| e.field), Err("routing_key"));
        let mut s = sink("amqp://h");
        s.exchange = String::new();
        assert!(validate(&s).is_ok(), "the default exchange is allowed");
        s.declare = true;
        assert_eq!(validate(&s).map_err(|e| e.field), Err("exchange"));
    }

    #[test]
    fn the_routing_key_escapes_the_document_into_one_word() {
        assert_eq!(
            render_key("{kind}.{document}", "published", "my book.v2", Some(3)),
            "published.my%20book%2Ev2"
        );
        assert_eq!(render_key("d.{version}", "deleted", "x", Some(7)), "d.7");
    }

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            redact("amqp://bob:s3cret@h:5672/%2f"),
            "amqp://bob:***@h:5672/%2f"
        );
        assert_eq!(redact("amqp://h:5672"), "amqp://h:5672");
    }
}
