//! The contract's tables, held together: every client event of
//! `tally::events::ClientEvent` is answered by a real server and listed in
//! the README; every refusal code of `tally::refusal::Code` is in the
//! README's table with its HTTP status; every rate-limit option is off in
//! the test harnesses' "no limits" environment.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use common::{NO_LIMITS, TempDb, TestClient, TestServer};
use serde_json::json;
use strum::VariantArray;
use tally::events::ClientEvent;
use tally::refusal::Code;

const README: &str = include_str!("../README.md");

/// The README's section that starts with `heading`, up to the next `## `.
fn section(heading: &str) -> &'static str {
    let start = README
        .find(heading)
        .unwrap_or_else(|| panic!("the README has a section {heading}"));
    let rest = &README[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[tokio::test]
async fn every_client_event_is_answered_by_its_handler() {
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let client = TestClient::named(&server.url(), "ada").await;
    // `{}` is a valid click and a refused anything else: either way the
    // event's handler answers. An event without a handler would leave the
    // ack unanswered, and `emit_json` fails the test after its timeout.
    for event in ClientEvent::ALL {
        let ack = client.emit_json(event.name(), json!({})).await;
        assert!(
            ack.is_object(),
            "`{}` answers with an object: {ack}",
            event.name()
        );
        if let Some(code) = ack.pointer("/error/code") {
            let code = code.as_str().unwrap_or_default();
            assert!(
                code.parse::<Code>().is_ok(),
                "`{}` answers with a listed code, not {code}",
                event.name()
            );
        }
    }
    assert!(client.emit_json("click", json!({})).await["total"].is_u64());
    client.disconnect().await;
    server.stop().await.unwrap();
}

#[test]
fn the_readme_contract_lists_every_client_event() {
    let contract = section("## Socket.IO contract");
    for event in ClientEvent::ALL {
        let row = format!("| client → server | `{}` |", event.name());
        assert!(
            contract.contains(&row),
            "the README's contract has a row {row}"
        );
    }
    let listed = contract.matches("| client → server |").count();
    assert_eq!(
        listed,
        ClientEvent::ALL.len(),
        "the README lists a client event the server does not have"
    );
}

#[test]
fn the_readme_table_of_refusal_codes_is_the_servers() {
    let start = README
        .find("<!-- refusal codes -->")
        .expect("the README marks its table of refusal codes");
    let table: BTreeMap<String, u16> = README[start..]
        .lines()
        .skip(3) // the marker, the header and its rule
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let code = cells[0].trim_matches('`').to_string();
            let status = cells[1]
                .parse()
                .unwrap_or_else(|_| panic!("a status in {line}"));
            (code, status)
        })
        .collect();
    let server: BTreeMap<String, u16> = Code::VARIANTS
        .iter()
        .map(|code| (code.as_str().to_string(), code.status().as_u16()))
        .collect();
    assert_eq!(
        table, server,
        "the README's codes and statuses are the server's"
    );
}

#[test]
fn the_no_limits_environments_turn_every_limit_off() {
    let limits: BTreeSet<String> = tally::config::Cli::command()
        .get_arguments()
        .filter(|arg| arg.get_long().is_some_and(|long| long.ends_with("-limit")))
        .map(|arg| {
            arg.get_env()
                .and_then(|env| env.to_str())
                .expect("every option has an environment variable")
                .to_string()
        })
        .collect();
    assert_eq!(
        limits.len(),
        ClientEvent::ALL
            .iter()
            .filter(|event| event.limit(&tally::config::EventLimits::NONE).is_some())
            .count()
            // The creation limits: new names, new conversations.
            + 2,
        "one `--*-limit` option per limited event, and the two creation limits"
    );
    let rust: BTreeSet<String> = NO_LIMITS
        .iter()
        .filter(|(_, value)| *value == "0")
        .map(|(name, _)| name.to_string())
        .collect();
    let js = include_str!("js/server.mjs");
    for limit in &limits {
        assert!(
            rust.contains(limit),
            "tests/common's NO_LIMITS sets {limit}"
        );
        assert!(
            js.contains(&format!("{limit}: '0'")),
            "tests/js/server.mjs's NO_LIMITS sets {limit}"
        );
    }
}

#[test]
fn the_openapi_document_describes_every_api_route() {
    use utoipa::OpenApi;
    // The routes `http::api()` registers, read from its source.
    let source = include_str!("../src/http/mod.rs");
    let api = &source[source.find("pub fn api()").unwrap()..];
    let api = &api[..api.find("\n}\n").unwrap()];
    let mut routes: BTreeSet<String> = api
        .split(".route(")
        .skip(1)
        .map(|call| {
            let path = call.split(',').next().unwrap().trim();
            match path.strip_prefix('"') {
                Some(quoted) => quoted.trim_end_matches('"').to_string(),
                // A constant: the one route named by one.
                None => "/api/conversations/{id}/messages".to_string(),
            }
        })
        .collect();
    assert!(
        api.contains("MESSAGES_ROUTE"),
        "the constant above is still used"
    );
    assert!(source.contains(r#"const MESSAGES_ROUTE: &str = "/api/conversations/{id}/messages";"#));
    let document: BTreeSet<String> = tally::http::openapi::ApiDoc::openapi()
        .paths
        .paths
        .keys()
        .cloned()
        .collect();
    routes.retain(|route| route.starts_with("/api/"));
    assert_eq!(
        routes, document,
        "every API route is in the document, and no other"
    );
}
