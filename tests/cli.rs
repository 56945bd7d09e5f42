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
fn every_option_has_an_environment_variable_and_a_readme_row() {
    let output = Command::new(TALLY)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    let readme = include_str!("../README.md");
    let flags: Vec<&str> = help
        .lines()
        .filter_map(long_flag)
        .filter(|flag| !matches!(*flag, "help" | "version"))
        .collect();
    // Guards against a help format this parser no longer understands, which
    // would otherwise let the test pass on nothing.
    assert!(flags.len() >= 15, "options found in --help: {flags:?}");
    for flag in flags {
        let env = format!("TALLY_{}", flag.to_uppercase().replace('-', "_"));
        // Secrets are listed without their value: `[env: NAME]`.
        assert!(
            help.contains(&format!("[env: {env}=")) || help.contains(&format!("[env: {env}]")),
            "--{flag} can be set with {env}"
        );
        assert!(
            readme.contains(&format!("| `--{flag}` | `{env}`")),
            "the README's configuration table has a row for --{flag} and {env}"
        );
    }
}

/// The long option a `--help` line introduces (`--addr <ADDR>`, `-h, --help`).
fn long_flag(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let rest = match line.strip_prefix("--") {
        Some(rest) => rest,
        None => line.strip_prefix('-')?.split_once(", --")?.1,
    };
    rest.split([' ', '<', '=']).next()
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
