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

/// The packets polled from `session` until one for which `wanted` holds
/// (engine.io's pings come first).
async fn polled(
    http: &reqwest::Client,
    session: &str,
    wanted: impl Fn(&str) -> bool,
) -> Vec<String> {
    tokio::time::timeout(common::WAIT, async {
        let mut packets: Vec<String> = Vec::new();
        while !packets.iter().any(|packet| wanted(packet)) {
            let reply = http
                .get(session)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            packets.extend(reply.split('\u{1e}').map(str::to_string));
        }
        packets
    })
    .await
    .expect("the server sends the packet polled for")
}

/// Opens a polling session by hand, joins `namespace` with `auth`, and
/// gives its URL (with the `sid`), the `sid`, and the join's answer.
async fn raw_session(
    url: &str,
    namespace: &str,
    auth: &serde_json::Value,
) -> (String, String, Vec<String>) {
    let http = reqwest::Client::new();
    let open = http
        .get(format!("{url}/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: serde_json::Value = serde_json::from_str(open.trim_start_matches('0')).unwrap();
    let sid = open["sid"].as_str().unwrap().to_string();
    let session = format!("{url}/socket.io/?EIO=4&transport=polling&sid={sid}");
    let separator = if namespace == "/" {
        String::new()
    } else {
        format!("{namespace},")
    };
    let posted = http
        .post(&session)
        .body(format!("40{separator}{auth}"))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let answer = polled(&http, &session, |packet| packet.starts_with("4")).await;
    (session, sid, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_level_prints_a_secret_and_json_logs_are_json() {
    const PASSWORD: &str = "correct horse battery staple";
    const API_KEY: &str = "api-key-0123456789abcdef";
    const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    for format in ["human", "json"] {
        let mut server = ChildServer::start(
            &[
                "--addr",
                "127.0.0.1:0",
                "--log",
                "trace",
                "--log-format",
                format,
                "--admin",
                "--admin-password-hash",
                &hash,
                "--api-key",
                API_KEY,
                "--admin-token",
                ADMIN_TOKEN,
            ],
            &[],
        );
        let http = reqwest::Client::new();
        let issued: serde_json::Value = http
            .post(format!("{}/api/session", server.url))
            .json(&serde_json::json!({"username": "ada"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = issued["token"].as_str().unwrap().to_string();
        // The official client's way, over each transport.
        for transport in [
            common::TransportType::Polling,
            common::TransportType::Websocket,
        ] {
            let client = common::TestClient::connect_as(
                &server.url,
                transport,
                serde_json::json!({ "token": token }),
            )
            .await
            .unwrap();
            client.click_total().await;
            client
                .emit_json("refresh", serde_json::json!({ "token": token }))
                .await;
            client.disconnect().await;
        }
        // By hand, so that the test knows the polling session's id.
        let (session, sid, joined) =
            raw_session(&server.url, "/", &serde_json::json!({ "token": token })).await;
        assert!(
            joined.iter().any(|packet| packet.starts_with("40{")),
            "{joined:?}"
        );
        http.post(&session)
            .body("42[\"click\"]")
            .send()
            .await
            .unwrap();
        polled(&http, &session, |packet| packet.starts_with("42[\"count\"")).await;
        // The Admin UI's login, and the session id it is given.
        let (admin_url, admin_sid, mut answer) = raw_session(
            &server.url,
            "/admin",
            &serde_json::json!({ "username": "admin", "password": PASSWORD }),
        )
        .await;
        if !answer.iter().any(|packet| packet.contains("[\"session\"")) {
            answer
                .extend(polled(&http, &admin_url, |packet| packet.contains("[\"session\"")).await);
        }
        let admin_session = answer
            .iter()
            .find_map(|packet| {
                let event: serde_json::Value =
                    serde_json::from_str(packet.strip_prefix("42/admin,")?).ok()?;
                (event[0] == "session").then(|| event[1].as_str().map(str::to_string))?
            })
            .unwrap_or_else(|| panic!("no session in {answer:?}"));
        // The backend API and the monitoring API, with their keys.
        let posted = http
            .post(format!("{}/api/conversations/room/messages", server.url))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"userId": "ada", "content": "hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 201);
        let stats = http
            .get(format!("{}/api/admin/stats", server.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(stats.status(), 200);

        let log = log_of(&mut server);
        assert!(log.len() > 20, "trace logs were written: {log:?}");
        assert!(
            log.iter().any(|line| line.contains("/socket.io/")),
            "requests are logged at trace: {log:?}"
        );
        // The signature is the secret part; the whole token is longer still.
        let signature = token.rsplit('.').next().unwrap();
        let secrets = [
            ("a token", signature),
            ("the Admin UI password", PASSWORD),
            ("the API key", API_KEY),
            ("the admin token", ADMIN_TOKEN),
            ("a polling session id", sid.as_str()),
            ("the Admin UI's session id", admin_sid.as_str()),
            ("an Admin UI login session", admin_session.as_str()),
        ];
        for line in &log {
            for (what, secret) in secrets {
                assert!(!line.contains(secret), "{what} in the log: {line}");
            }
            if format == "json" {
                let parsed: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
                assert!(parsed["level"].is_string(), "{line}");
            }
        }
    }
}
