//! The webhook sink: POSTs each event's JSON to a URL.
//!
//! Request: `Content-Type: application/json`, `Idempotency-Key: <event_id>` (the same on
//! every retry, so the receiver can deduplicate), `X-Postpub-Event: <kind>`, and, when a
//! `secret` is configured, `X-Postpub-Signature: sha256=<hex>` where `<hex>` is the
//! lowercase hex HMAC-SHA256 of the exact request body keyed with the secret's UTF-8 bytes.
//!
//! Answer: 2xx is an acknowledgement. 4xx other than 408 and 429 is permanent (the event is
//! parked with the status and the start of the answer). Everything else (3xx, 408, 429, 5xx,
//! connection errors, `timeout`) is transient and retried. Redirects are not followed.
//! A `Retry-After` on a transient answer (seconds or an HTTP date) is honoured: the next
//! attempt waits at least that long (up to [`RETRY_AFTER_MAX`]), longer if the backoff
//! says so.

use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::Sha256;
use tokio::sync::Semaphore;

use super::{error_chain, Ack, Error, Invalid, Outgoing, Sink, SinkError};
use crate::config::{out_of_bounds, WebhookSinkConfig, HOUR};

/// How much of a refusal's answer goes into the parked event's reason.
const REASON_BYTES: usize = 300;

/// The longest `Retry-After` obeyed: a receiver asking for a day (or sending a date years
/// ahead by mistake) must not silently freeze a document's events for that long.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// The webhook sink.
pub struct WebhookSink {
    /// Where to POST.
    url: reqwest::Url,
    /// HMAC key for `X-Postpub-Signature`.
    secret: Option<Vec<u8>>,
    /// Send the version's content too.
    include_body: bool,
    /// Keeps connections alive between events; carries the timeout.
    client: reqwest::Client,
    /// Requests in flight at once (`concurrency`).
    slots: Semaphore,
}

/// Checks a `kind = "webhook"` table.
pub fn validate(w: &WebhookSinkConfig) -> Result<(), Invalid> {
    if let Some(problem) = out_of_bounds(w.timeout, Duration::from_millis(1), HOUR) {
        return Err(Invalid::new("timeout", problem));
    }
    match reqwest::Url::parse(&w.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => {
            return Err(Invalid::new(
                "url",
                "must be an http:// or https:// URL with a host",
            ))
        }
        Err(_) if w.url.trim().is_empty() => {
            return Err(Invalid::new(
                "url",
                "must be set (e.g. \"https://example.com/hooks/postpub\")",
            ))
        }
        Err(e) => return Err(Invalid::new("url", format!("must be a URL: {e}"))),
    }
    if w.secret.as_deref() == Some("") {
        return Err(Invalid::new(
            "secret",
            "must not be empty (leave it out to send unsigned requests)",
        ));
    }
    if !(1..=1000).contains(&w.concurrency) {
        return Err(Invalid::new("concurrency", "must be between 1 and 1000"));
    }
    Ok(())
}

impl WebhookSink {
    /// A sink for `cfg` (validated by `Config::validate`).
    pub fn new(name: String, cfg: &WebhookSinkConfig) -> Result<Self, Error> {
        let setup = |reason: String| Error::Setup {
            sink: name.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| setup(format!("url: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("postpub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setup(format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        Ok(Self {
            url,
            secret: cfg.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            include_body: cfg.include_body,
            client,
            slots: Semaphore::new(cfg.concurrency.max(1)),
        })
    }

    async fn post(&self, event: &Outgoing) -> Result<Ack, SinkError> {
        let body = event.json_for(self.include_body).clone();
        let mut req = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("Idempotency-Key", event.event_id.to_string())
            .header("X-Postpub-Event", event.kind.as_str());
        if let Some(secret) = &self.secret {
            req = req.header("X-Postpub-Signature", signature(secret, &body));
        }
        let _slot =
            self.slots.acquire().await.map_err(|_| {
                SinkError::Transient("the webhook sink is shutting down".to_owned())
            })?;
        let resp = req.body(body).send().await.map_err(|e| {
            SinkError::Transient(format!(
                "POST {}: {}",
                self.url,
                error_chain(&e.without_url())
            ))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Ack { duplicate: false });
        }
        let retry_after = retry_after(resp.headers(), SystemTime::now());
        // The answer's start helps the operator; it is read within the same timeout.
        let text = resp.text().await.unwrap_or_default();
        let excerpt: String = text.trim().chars().take(REASON_BYTES).collect();
        let reason = if excerpt.is_empty() {
            format!("POST {} answered {status}", self.url)
        } else {
            format!("POST {} answered {status}: {excerpt}", self.url)
        };
        Err(match (classify(status, reason), retry_after) {
            (SinkError::Transient(reason), Some(after)) => SinkError::RetryAfter {
                reason: format!("{reason} (Retry-After: {}s)", after.as_secs()),
                after,
            },
            (e, _) => e,
        })
    }
}

impl Sink for WebhookSink {
    fn deliver<'a>(&'a self, event: &'a Outgoing) -> BoxFuture<'a, Result<Ack, SinkError>> {
        Box::pin(self.post(event))
    }
}

/// Sorts a non-2xx answer: a client error will not go away by itself, except 408 (the
/// server timed out) and 429 (slow down).
fn classify(status: StatusCode, reason: String) -> SinkError {
    if status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
    {
        SinkError::Permanent(reason)
    } else {
        SinkError::Transient(reason)
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date (RFC 9110
/// §10.2.3), capped at [`RETRY_AFTER_MAX`]; `None` when absent or unreadable (then the
/// backoff alone decides).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let after = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(after.min(RETRY_AFTER_MAX))
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn client_errors_are_permanent_except_408_and_429() {
        let p = |code: u16| {
            matches!(
                classify(StatusCode::from_u16(code).expect("status"), String::new()),
                SinkError::Permanent(_)
            )
        };
        assert!(p(400));
        assert!(p(404));
        assert!(p(422));
        assert!(!p(408));
        assert!(!p(429));
        assert!(!p(500));
        assert!(!p(503));
        assert!(!p(302));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_caps_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).expect("header"));
            retry_after(&h, now)
        };
        assert_eq!(with("7"), Some(Duration::from_secs(7)));
        assert_eq!(with(" 0 "), Some(Duration::ZERO));
        assert_eq!(with("999999"), Some(RETRY_AFTER_MAX));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            with("Tue, 14 Nov 2023 22:14:00 GMT"),
            Some(Duration::from_secs(40))
        );
        assert_eq!(with("Tue, 14 Nov 2023 22:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(with("-5"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
