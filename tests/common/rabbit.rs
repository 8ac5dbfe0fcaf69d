//! The RabbitMQ broker the AMQP tests use: the machine's rabbitmq-server on 127.0.0.1:5672
//! when it answers (`.ci/run` starts it), otherwise — on a machine where it is not running,
//! or in a network namespace of its own (`unshare -n cargo test`) — a private node started
//! from the installed server programs on free ports, shared by the tests of this binary and
//! stopped by a watcher when the test process ends.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::ops::free_port;

/// Where a broker listens, and the URL that logs in as `guest` on its default vhost.
pub struct Broker {
    pub addr: String,
    pub url: String,
}

const SHARED: &str = "127.0.0.1:5672";

fn answers(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// The broker of this test run (see the module comment).
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let addr = if answers(SHARED) {
            SHARED.to_owned()
        } else {
            start_private()
        };
        Broker {
            url: format!("amqp://guest:guest@{addr}/%2f"),
            addr,
        }
    })
}

fn server_program() -> PathBuf {
    let packaged = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if packaged.exists() {
        packaged
    } else {
        PathBuf::from("rabbitmq-server")
    }
}

/// Starts a node of our own and waits until it takes connections. Its files live in a temp
/// dir; a detached shell stops the node and its epmd and removes the dir once this process
/// is gone (tests have no hook at the end of a run).
fn start_private() -> String {
    let (port, dist, epmd) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("postpub-rabbit-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join(".erlang.cookie"), "postpubtestcookie").expect("cookie");
    let _ = Command::new("chmod")
        .arg("400")
        .arg(dir.join(".erlang.cookie"))
        .status();
    let node = format!("postpub-test-{port}@localhost");
    let log = std::fs::File::create(dir.join("server.log")).expect("log file");
    let mut child = Command::new(server_program())
        .current_dir(&dir)
        .env("HOME", &dir)
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("ERL_EPMD_PORT", epmd.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("no rabbitmq-server on {SHARED} and none to start ({e}): apt-get install rabbitmq-server")
        });
    let watcher = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; \
         pkill -f '[b]eam.*{dir}' ; sleep 1; pkill -9 -f '[b]eam.*{dir}' ; kill {pid} 2>/dev/null; \
         ERL_EPMD_PORT={epmd} epmd -kill >/dev/null 2>&1; rm -rf {dir}",
        me = std::process::id(),
        pid = child.id(),
        dir = dir.display(),
    );
    let _ = Command::new("setsid")
        .args(["sh", "-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    // Reaped when it ends, so it never lingers as a zombie of the test process.
    std::thread::spawn(move || child.wait());
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    eprintln!("no rabbitmq-server on {SHARED}: starting a private node on {addr}");
    while !answers(&addr) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the private rabbitmq-server did not listen on {addr} within 180 s (log: {})",
            dir.join("server.log").display()
        );
        // The pace of the checks, not a wait for anything.
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("private rabbitmq-server up after {:?}", start.elapsed());
    addr
}
