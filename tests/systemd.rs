//! The systemd units: `systemd-analyze verify` finds nothing but the binary's absence, and
//! the settings operators rely on are there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

/// `key -> every value` of a unit file (keys may repeat).
fn settings(unit: &str) -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(units_dir().join(unit)).expect("unit file");
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.trim().to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    out
}

fn one<'a>(s: &'a HashMap<String, Vec<String>>, key: &str) -> &'a str {
    s.get(key)
        .and_then(|v| v.first())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{key}= missing"))
}

#[test]
fn the_main_unit_is_a_hardened_notify_service() {
    let s = settings("postpub.service");
    assert_eq!(one(&s, "Type"), "notify");
    assert_eq!(
        one(&s, "ExecStart"),
        "/usr/local/bin/postpub run --config /etc/postpub/postpub.toml"
    );
    assert_eq!(one(&s, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one(&s, "Restart"), "on-failure");
    assert_eq!(one(&s, "User"), "postpub");
    let watchdog = humantime::parse_duration(one(&s, "WatchdogSec")).expect("WatchdogSec");
    assert!(watchdog >= Duration::from_secs(2));
    // Longer than the default drain plus the release grace, or systemd kills a clean stop.
    let stop = humantime::parse_duration(one(&s, "TimeoutStopSec")).expect("TimeoutStopSec");
    let drain = postpub::config::WorkerConfig::default().shutdown_timeout;
    assert!(stop > drain + Duration::from_secs(5), "{stop:?}");
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert_eq!(one(&s, key), want, "{key}");
    }
    for key in ["After", "Wants"] {
        assert!(
            one(&s, key).contains("postpub-migrate.service"),
            "{key} names the migration unit"
        );
    }
    let m = settings("postpub-migrate.service");
    assert_eq!(one(&m, "Type"), "oneshot");
    assert!(one(&m, "ExecStart").starts_with("/usr/local/bin/postpub migrate"));
}

#[test]
fn systemd_analyze_verify_reports_only_the_missing_binary() {
    if which("systemd-analyze").is_none() {
        // As root (CI, the dev machines) the package can be installed on the spot.
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "systemd"])
            .output();
    }
    let Some(analyze) = which("systemd-analyze") else {
        println!("SKIPPED: systemd-analyze is not installed and could not be installed");
        return;
    };
    let mut units: Vec<PathBuf> = std::fs::read_dir(units_dir())
        .expect("systemd/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    assert_eq!(units.len(), 2, "{units:?}");
    // And as an operator who keeps the password in a credential has them: the commented
    // LoadCredential= line switched on (a run of its own: verify reads a unit name once).
    let with_credential =
        std::env::temp_dir().join(format!("postpub-units-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&with_credential).expect("temp dir");
    let mut switched_on = Vec::new();
    for unit in &units {
        let text = std::fs::read_to_string(unit).expect("unit");
        assert!(
            text.contains("\n#LoadCredential=pg-password:/etc/postpub/pg-password\n"),
            "{} shows the credential",
            unit.display()
        );
        let on = text.replace("\n#LoadCredential=", "\nLoadCredential=");
        let path = with_credential.join(unit.file_name().expect("name"));
        std::fs::write(&path, on).expect("write unit");
        switched_on.push(path);
    }
    let mut text = String::new();
    for set in [&units, &switched_on] {
        let out = Command::new(&analyze)
            .arg("verify")
            .args(set)
            .output()
            .expect("run systemd-analyze");
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&with_credential);
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(l.contains("/usr/local/bin/postpub") && l.contains("not executable")))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify:\n{text}");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}
