//! The `tally` binary as an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

#[test]
fn invalid_options_fail_at_start_naming_the_option() {
    for (flag, value) in [
        ("--broadcast-interval", "fast"),
        ("--ping-interval", "0"),
        ("--transports", "smoke-signals"),
        ("--allowed-origins", "not-an-origin"),
        ("--addr", "nowhere"),
    ] {
        let output = Command::new(TALLY)
            .args(["serve", flag, value])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{flag} {value} must be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "the error names {flag}: {stderr}");
    }

    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(TALLY)
        .args(["--addr", "127.0.0.1:0", "--log", "tally=[unclosed"])
        .env(
            "TALLY_DATABASE_URL",
            format!("sqlite://{}/t.db", dir.path().display()),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--log"));

    let output = Command::new(TALLY)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            "mongodb://localhost/tally",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported database URL"));
}

#[test]
fn help_lists_every_option_with_its_environment_variable() {
    let output = Command::new(TALLY)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for env in [
        "TALLY_ADDR",
        "TALLY_DATABASE_URL",
        "TALLY_ALLOWED_ORIGINS",
        "TALLY_TRANSPORTS",
        "TALLY_PING_INTERVAL",
        "TALLY_PING_TIMEOUT",
        "TALLY_MAX_PAYLOAD",
        "TALLY_FLUSH_INTERVAL",
        "TALLY_BROADCAST_INTERVAL",
        "TALLY_LOG",
    ] {
        assert!(help.contains(env), "--help mentions {env}");
    }
}

#[test]
fn logs_the_bound_address_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(TALLY)
        .env("TALLY_ADDR", "127.0.0.1:0")
        .env(
            "TALLY_DATABASE_URL",
            format!("sqlite://{}/t.db", dir.path().display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    // Read the log on a thread so the wait below can time out.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server logs its address");
        if let Some((_, addr)) = line.split_once("listening on http://") {
            break addr.trim().to_string();
        }
    };
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0, "the real port is logged, not 0");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || done_tx.send(child.wait()).ok());
    let status = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "clean shutdown exits 0, got {status}");
}
