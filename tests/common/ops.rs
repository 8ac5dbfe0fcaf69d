//! Helpers for the operations tests: a minimal HTTP/1.1 client (no client crate needed for
//! a handful of GETs), free ports, and login roles that are dropped when the test ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::server_url;

/// A port nothing listens on right now (the kernel's pick; a race is possible but rare).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// One HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" in {}", self.body))
            .to_owned()
    }
}

/// `GET path` with extra headers, over a fresh connection (`Connection: close`).
pub async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Resp {
    tokio::time::timeout(Duration::from_secs(15), get_inner(port, path, headers))
        .await
        .unwrap_or_else(|_| panic!("GET {path} took more than 15s"))
}

async fn get_inner(port: u16, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).expect("hex").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// A login role, member of `member_of`, dropped when the test ends (pass or fail), with
/// whatever it owns or was granted in the databases it was used in.
pub struct LoginRole {
    pub name: String,
    /// Databases it connected to (its objects and grants live there).
    dbs: Mutex<Vec<String>>,
}

impl LoginRole {
    pub async fn new(member_of: &str) -> LoginRole {
        let name = format!(
            "postpub_t_{}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10],
            member_of.trim_start_matches("postpub_")
        );
        super::connect(&server_url())
            .await
            .batch_execute(&format!("create role {name} login in role {member_of}"))
            .await
            .unwrap_or_else(|e| panic!("create role {name}: {e}"));
        LoginRole {
            name,
            dbs: Mutex::new(Vec::new()),
        }
    }

    /// `db`'s URL as this role.
    pub fn url(&self, db: &super::TestDb) -> String {
        {
            let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
            if !dbs.contains(&db.url) {
                dbs.push(db.url.clone());
            }
        }
        let mut cfg: tokio_postgres::Config = db.url.parse().expect("test url");
        cfg.user(&self.name);
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        format!("postgres://{}@{host}:{port}/{}", self.name, db.name)
    }

    pub async fn client(&self, db: &super::TestDb) -> tokio_postgres::Client {
        super::connect(&self.url(db)).await
    }
}

impl Drop for LoginRole {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dbs = std::mem::take(&mut *self.dbs.lock().unwrap_or_else(|p| p.into_inner()));
        super::on_own_runtime(async move {
            let Ok((c, conn)) = super::connect_raw(&server_url()).await else {
                return;
            };
            tokio::spawn(conn);
            let _ = c
                .execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1",
                    &[&name],
                )
                .await;
            // A role that owns objects or holds grants cannot be dropped until they go.
            for url in dbs {
                if let Ok((d, conn)) = super::connect_raw(&url).await {
                    tokio::spawn(conn);
                    let _ = d
                        .batch_execute(&format!("drop owned by {name} cascade"))
                        .await;
                }
            }
            if let Err(e) = c
                .batch_execute(&format!("drop role if exists {name}"))
                .await
            {
                eprintln!("could not drop test role {name}: {e}");
            }
        });
    }
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}
