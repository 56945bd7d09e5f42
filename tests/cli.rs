//! The `tally` binary as an operator runs it. Every run is bounded in time
//! and happens in its own temporary directory, with none of the developer's
//! `TALLY_*` variables.

mod common;

use common::{ChildServer, run_to_exit};

#[test]
fn invalid_options_fail_at_start_naming_the_option() {
    for (flag, value) in [
        ("--broadcast-interval", "fast"),
        ("--ping-interval", "0"),
        ("--transports", "smoke-signals"),
        ("--allowed-origins", "not-an-origin"),
        ("--addr", "nowhere"),
    ] {
        let output = run_to_exit(&["serve", flag, value]);
        assert!(!output.status.success(), "{flag} {value} must be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "the error names {flag}: {stderr}");
    }

    let output = run_to_exit(&["--addr", "127.0.0.1:0", "--log", "tally=[unclosed"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--log"));

    let output = run_to_exit(&[
        "--addr",
        "127.0.0.1:0",
        "--database-url",
        "mongodb://localhost/tally",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported database URL"));

    // A database server that is not there: the error names it, never the password.
    for url in [
        "postgres://tally:hunter2@127.0.0.1:1/tally",
        "mysql://tally:hunter2@127.0.0.1:1/tally",
    ] {
        let output = run_to_exit(&[
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            url,
            "--database-timeout",
            "2s",
        ]);
        assert!(!output.status.success(), "{url} must stop the server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot connect to the database at"),
            "{stderr}"
        );
        assert!(stderr.contains("***@127.0.0.1:1/tally"), "{stderr}");
        assert!(stderr.contains("Connection refused"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    }
}

#[test]
fn every_option_has_an_environment_variable_and_a_readme_row() {
    let output = run_to_exit(&["serve", "--help"]);
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
    let mut server = ChildServer::start(&[], &[("TALLY_ADDR", "127.0.0.1:0")]);
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0, "the real port is logged, not 0");
    // The default database is created where the server was started.
    assert!(server.dir.path().join("tally.db").exists());
    let status = server.terminate();
    assert!(status.success(), "clean shutdown exits 0, got {status}");
}

/// Every log line a server wrote until it exited.
fn log_of(server: &mut ChildServer) -> Vec<String> {
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    server.log.try_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_level_prints_a_token_and_json_logs_are_json() {
    for format in ["human", "json"] {
        let mut server = ChildServer::start(
            &[
                "--addr",
                "127.0.0.1:0",
                "--log",
                "trace",
                "--log-format",
                format,
            ],
            &[],
        );
        let issued: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/session", server.url))
            .json(&serde_json::json!({"username": "ada"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = issued["token"].as_str().unwrap().to_string();
        let client = common::TestClient::connect_as(
            &server.url,
            common::TransportType::Polling,
            serde_json::json!({ "token": token }),
        )
        .await
        .unwrap();
        client.click_total().await;
        client
            .emit_json("refresh", serde_json::json!({ "token": token }))
            .await;
        client.disconnect().await;
        let log = log_of(&mut server);
        assert!(log.len() > 20, "trace logs were written: {log:?}");
        // The signature is the secret part; the whole token is longer still.
        let signature = token.rsplit('.').next().unwrap();
        for line in &log {
            assert!(!line.contains(signature), "a token in the log: {line}");
            if format == "json" {
                let parsed: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
                assert!(parsed["level"].is_string(), "{line}");
            }
        }
    }
}
