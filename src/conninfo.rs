//! libpq connection strings as users write them for psql: a `postgres://` URL or
//! `key=value` pairs, with the TLS and password-file parameters tokio-postgres refuses
//! (`sslmode=verify-full`, `sslrootcert`, `sslcert`, `sslkey`, `passfile`) taken out here
//! and the rest left to the driver.
//!
//! Syntax only, no I/O and no environment: `config` checks a URL with it (a typo is a
//! usage error, exit 2) and `db` builds connections from it, so it imports neither.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The parameters this module takes out of a connection string.
const OURS: [&str; 5] = ["sslmode", "sslrootcert", "sslcert", "sslkey", "passfile"];

/// libpq's `sslmode`, without `allow` (plain first, TLS only if refused: nobody should
/// want it, and it would need a second connection attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or nothing; the certificate is not checked (unless a root certificate file is
    /// there: then as `VerifyCa`, libpq's rule).
    Require,
    /// TLS, certificate chain checked against the root certificates, any host name.
    VerifyCa,
    /// TLS, chain checked and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The spelling in connection strings.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server certificate's chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(Error::SslMode(other.to_owned())),
        })
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's store.
    System,
}

impl RootCert {
    fn parse(v: &str) -> RootCert {
        if v == "system" {
            RootCert::System
        } else {
            RootCert::File(PathBuf::from(v))
        }
    }
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCert::File(p) => write!(f, "{}", p.display()),
            RootCert::System => f.write_str("system"),
        }
    }
}

/// The parameters taken out of a connection string; `None` = not given there (the
/// environment or libpq's default applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `sslmode`.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`.
    pub sslrootcert: Option<RootCert>,
    /// `sslcert`: client certificate (PEM).
    pub sslcert: Option<PathBuf>,
    /// `sslkey`: the client certificate's private key (PEM).
    pub sslkey: Option<PathBuf>,
    /// `passfile`: a `.pgpass`-format file.
    pub passfile: Option<PathBuf>,
}

impl Params {
    fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        match key {
            "sslmode" => self.sslmode = Some(value.parse()?),
            "sslrootcert" => self.sslrootcert = Some(RootCert::parse(value)),
            "sslcert" => self.sslcert = Some(PathBuf::from(value)),
            "sslkey" => self.sslkey = Some(PathBuf::from(value)),
            "passfile" => self.passfile = Some(PathBuf::from(value)),
            _ => {}
        }
        Ok(())
    }

    /// The parameters as `key='value'` pairs, to append to a keyword connection string.
    pub fn to_keywords(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        [
            ("sslmode", self.sslmode.map(|m| m.as_str().to_owned())),
            (
                "sslrootcert",
                self.sslrootcert.as_ref().map(|r| r.to_string()),
            ),
            ("sslcert", self.sslcert.as_deref().map(path)),
            ("sslkey", self.sslkey.as_deref().map(path)),
            ("passfile", self.passfile.as_deref().map(path)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", quote(&v))))
        .collect()
    }
}

/// A connection string that cannot be used. Never quotes the string (it may hold a
/// password); callers add a redacted copy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a value libpq knows for `sslmode`.
    #[error("sslmode={0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    /// A `key=value` string that does not tokenize.
    #[error("{0}")]
    Syntax(String),
    /// What tokio-postgres said about the rest.
    #[error("{0}")]
    Driver(String),
}

/// A connection string split into what the driver reads and what we read.
#[derive(Debug, Clone)]
pub struct Split {
    /// The driver's settings (ours removed).
    pub driver: tokio_postgres::Config,
    /// Ours.
    pub params: Params,
}

/// Splits and parses a connection string (URL or `key=value` pairs).
pub fn parse(conninfo: &str) -> Result<Split, Error> {
    let (rest, params) = if is_url(conninfo) {
        split_url(conninfo)?
    } else {
        split_keywords(conninfo)?
    };
    let driver = rest.parse::<tokio_postgres::Config>().map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        Error::Driver(format!("{e}{cause}"))
    })?;
    Ok(Split { driver, params })
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Takes our parameters out of a URL's query string (percent-decoded, as libpq does).
fn split_url(url: &str) -> Result<(String, Params), Error> {
    let mut params = Params::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), params));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k);
        if OURS.contains(&key.as_str()) {
            params.set(&key, &decode(v))?;
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Takes our parameters out of `key = value` pairs (values bare or single-quoted, with
/// backslash escapes) and writes the rest back quoted for the driver.
fn split_keywords(s: &str) -> Result<(String, Params), Error> {
    let mut params = Params::default();
    let mut kept = Vec::new();
    for (k, v) in keywords(s)? {
        if OURS.contains(&k.as_str()) {
            params.set(&k, &v)?;
        } else {
            kept.push(format!("{k}={}", quote(&v)));
        }
    }
    Ok((kept.join(" "), params))
}

/// libpq's keyword/value syntax.
fn keywords(s: &str) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::Syntax(format!(
                "missing \"=\" after {key:?} in the connection string"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(Error::Syntax(format!(
                            "unterminated quoted value of {key:?} in the connection string"
                        )))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// A value single-quoted for a keyword connection string.
pub fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A secret file named in the configuration: relative paths are looked up in systemd's
/// credentials directory (`LoadCredential=`) when the service has one, else taken as
/// given (relative to the working directory).
pub fn credential_path(path: &Path, credentials_directory: Option<&str>) -> PathBuf {
    match credentials_directory {
        Some(dir) if path.is_relative() && !dir.is_empty() => Path::new(dir).join(path),
        _ => path.to_owned(),
    }
}

/// The password for `host:port:database:user` in a `.pgpass`-format text: the first
/// matching line (`*` matches anything; `\:` and `\\` escape), as libpq reads it.
pub fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    let wanted = [host, port.as_str(), db, user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = pgpass_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields.iter().zip(wanted).all(|(f, w)| f == "*" || f == w);
            // A password may itself contain ':'; everything after the fourth field is it.
            matches.then(|| fields[4..].join(":"))
        })
}

fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), fields.last_mut()) {
                    last.push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_psql_users_write_are_taken_out() {
        let s = parse(
            "postgres://u:pw@db.example:6543/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem\
             &application_name=x&sslcert=c.pem&sslkey=k.pem&passfile=/p",
        )
        .expect("parses");
        assert_eq!(s.params.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(
            s.params.sslrootcert,
            Some(RootCert::File("/etc/ca.pem".into()))
        );
        assert_eq!(s.params.sslcert, Some("c.pem".into()));
        assert_eq!(s.params.sslkey, Some("k.pem".into()));
        assert_eq!(s.params.passfile, Some("/p".into()));
        assert_eq!(s.driver.get_application_name(), Some("x"));
        assert_eq!(s.driver.get_password(), Some(&b"pw"[..]));
        assert_eq!(s.driver.get_dbname(), Some("app"));
    }

    #[test]
    fn system_roots_and_no_parameters() {
        let s = parse("postgresql://h/d?sslrootcert=system").expect("parses");
        assert_eq!(s.params.sslrootcert, Some(RootCert::System));
        assert_eq!(s.params.sslmode, None);
        let s = parse("postgres://h/d").expect("parses");
        assert_eq!(s.params, Params::default());
    }

    #[test]
    fn keyword_strings_round_trip_with_quotes() {
        let s = parse(
            "host=h port = 6000 user='u' password='p\\'w x' dbname=d sslmode=require sslrootcert='/a b/ca.crt'",
        )
        .expect("parses");
        assert_eq!(s.driver.get_password(), Some(&b"p'w x"[..]));
        assert_eq!(s.driver.get_ports(), &[6000]);
        assert_eq!(s.params.sslmode, Some(SslMode::Require));
        assert_eq!(
            s.params.sslrootcert,
            Some(RootCert::File("/a b/ca.crt".into()))
        );
        let again = format!("dbname=d {}", s.params.to_keywords().join(" "));
        assert_eq!(parse(&again).expect("reparses").params, s.params);
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse("postgres://h/d?sslmode=verify").expect_err("bad mode");
        assert!(e.to_string().contains("sslmode=\"verify\""), "{e}");
        assert!(parse("host=h sslmode=allow").is_err());
        assert!(parse("host='h").is_err());
        assert!(parse("host").is_err());
        assert!(parse("postgres://h:port/d").is_err());
    }

    #[test]
    fn pgpass_lines_match_like_libpq() {
        let text = "# comment\n\
                    other:5432:*:u:nope\n\
                    db.example:*:app:u:s3c\\:ret:tail\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "db.example", 6543, "app", "u").as_deref(),
            Some("s3c:ret:tail")
        );
        assert_eq!(
            pgpass_lookup(text, "else", 1, "x", "y").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup("h:1:d", "h", 1, "d", "u"), None);
    }

    #[test]
    fn credentials_come_from_systemds_directory() {
        let p = credential_path(Path::new("pg"), Some("/run/credentials/postpub.service"));
        assert_eq!(p, Path::new("/run/credentials/postpub.service/pg"));
        assert_eq!(
            credential_path(Path::new("/etc/pw"), Some("/run/c")),
            Path::new("/etc/pw")
        );
        assert_eq!(credential_path(Path::new("pw"), None), Path::new("pw"));
    }
}
