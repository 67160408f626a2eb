//! What scale must not break: listings come in pages, a thousand sessions
//! ending at once leave no registration active, and a call made while a
//! restarted hub waits for its spokes is answered `NO_PROVIDER` at once.
//! (How fast each of these is, is measured by `cargo bench --bench scale`.)

mod common;

use std::time::Duration;

use alkhub::peer::{spec, PeerBuilder};
use alkhub::protocol::{OperationType, PrincipalKind};
use alkhub::store::NewPrincipal;
use common::{hub, hub_with, Raw};
use futures_util::future::join_all;
use serde_json::{json, Value};

fn ids(listing: &Value) -> Vec<String> {
    listing["operations"]
        .as_array()
        .expect("an operations array")
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn listings_come_in_pages_that_cover_everything_once() {
    let hub = hub_with(|c| c.limits.max_list_page = 7).await;
    let mut builder = hub.spoke("lister").await;
    for i in 0..20 {
        builder = builder.operation(
            spec("pages", &format!("op{i:02}"), OperationType::Query),
            |_| async { Ok(json!(null)) },
        );
    }
    // Hidden from the caller below: pages skip it without ending early.
    let mut hidden = spec("pages", "op05x", OperationType::Query);
    hidden.access_level = alkhub::protocol::AccessLevel::Scoped;
    hidden.required_scopes = vec!["secret".into()];
    builder = builder.operation(hidden, |_| async { Ok(json!(null)) });
    let _spoke = builder.connect().await.unwrap();
    let client = hub.client("reader", &[]).await;
    let token = hub.token(PrincipalKind::Client, "http-reader", &[]).await;

    // Without a limit, pages hold limits.max_list_page.
    let first = hub.http("GET", "/v1/operations", Some(&token), None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(ids(&first.json()).len(), 7);
    assert!(first.json()["next"].is_string());

    // Over HTTP, following `next`.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(id) => format!("/v1/operations?limit=5&after={id}"),
            None => "/v1/operations?limit=5".to_owned(),
        };
        let page = hub.http("GET", &path, Some(&token), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        let got = ids(&page);
        assert!(got.len() <= 5);
        seen.extend(got);
        pages += 1;
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 50, "pagination does not end");
    }
    let mut expected: Vec<String> = (0..20).map(|i| format!("pages.op{i:02}")).collect();
    expected.extend(["hub.operations.get".into(), "hub.operations.list".into()]);
    expected.sort();
    assert_eq!(seen, expected, "every visible definition once, in order");
    assert!(pages >= 5);

    // Through hub.operations.list, the same pages.
    let mut listed = Vec::new();
    let mut input = json!({"limit": 6});
    loop {
        let page = client
            .call("hub.operations.list", input.clone())
            .await
            .unwrap()["data"]
            .clone();
        listed.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => input = json!({"limit": 6, "after": next}),
            None => break,
        }
    }
    assert_eq!(listed, expected);
    // No input is the first page of the default size.
    let default = client
        .call("hub.operations.list", Value::Null)
        .await
        .unwrap();
    assert_eq!(ids(&default["data"]).len(), 7);

    // A namespace keeps its own operations and those below it, paged too.
    let mut in_pages = Vec::new();
    let mut path = "/v1/operations?namespace=pages&limit=6".to_owned();
    loop {
        let page = hub.http("GET", &path, Some(&token), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        in_pages.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/operations?namespace=pages&limit=6&after={next}"),
            None => break,
        }
    }
    let only_pages: Vec<String> = (0..20).map(|i| format!("pages.op{i:02}")).collect();
    assert_eq!(in_pages, only_pages);
    let prefix = hub
        .http("GET", "/v1/operations?namespace=pag", Some(&token), None)
        .await;
    assert!(
        ids(&prefix.json()).is_empty(),
        "a namespace is whole segments"
    );
    let hub_ops = client
        .call("hub.operations.list", json!({"namespace": "hub"}))
        .await
        .unwrap();
    assert_eq!(
        ids(&hub_ops["data"]),
        ["hub.operations.get", "hub.operations.list"]
    );

    // Bad pages are refused by name.
    let over = hub
        .http("GET", "/v1/operations?limit=8", Some(&token), None)
        .await;
    assert_eq!(over.status, 400, "{}", over.body);
    assert!(over.body.contains("max_list_page"), "{}", over.body);
    let zero = hub
        .http("GET", "/v1/operations?limit=0", Some(&token), None)
        .await;
    assert_eq!(zero.status, 400, "{}", zero.body);
    let unknown = hub
        .http("GET", "/v1/operations?page=2", Some(&token), None)
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(
        unknown.body.contains("VALIDATION_ERROR"),
        "{}",
        unknown.body
    );
    let refused = client
        .call("hub.operations.list", json!({"limit": 100}))
        .await
        .unwrap_err();
    assert_eq!(refused.code, "VALIDATION_ERROR", "{}", refused.message);
}

/// Connects a raw spoke that declares `operations` and waits for `welcome`.
async fn raw_spoke(url: String, token: String, operations: Value) -> Raw {
    let mut raw = Raw::connect(&url).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": token, "operations": operations}}))
        .await;
    let welcome = raw.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(
        welcome["payload"]["rejected"].as_array().map(Vec::len),
        Some(0),
        "{welcome}"
    );
    raw
}

async fn active_rows(hub: &common::TestHub) -> usize {
    hub.db
        .store
        .fetch_raw_strings("SELECT id FROM operation_registrations WHERE status = 'active'")
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_thousand_sessions_ending_at_once_leave_no_registration_active() {
    const SPOKES: usize = 1000;
    let hub = hub_with(|c| {
        c.limits.max_unauthenticated = 4096;
        c.limits.max_unauthenticated_per_address = 4096;
    })
    .await;
    let tokens: Vec<String> = join_all((0..SPOKES).map(|i| {
        let store = hub.db.store.clone();
        async move {
            let new = NewPrincipal {
                id: format!("leaver-{i}"),
                ..Default::default()
            };
            let (_, token) = store
                .create_principal(PrincipalKind::Spoke, &new)
                .await
                .unwrap();
            token.expose().to_owned()
        }
    }))
    .await;
    let url = hub.ws_url(PrincipalKind::Spoke);
    // Every spoke provides its own operation and a shared one.
    let spokes = join_all(tokens.into_iter().enumerate().map(|(i, token)| {
        let ops = json!([
            {"namespace": "leave", "name": format!("own{i}"), "type": "query"},
            {"namespace": "leave", "name": "shared", "type": "query"},
        ]);
        tokio::spawn(raw_spoke(url.clone(), token, ops))
    }))
    .await;
    let spokes: Vec<Raw> = spokes.into_iter().map(|s| s.unwrap()).collect();
    assert_eq!(active_rows(&hub).await, 2 * SPOKES);
    assert_eq!(
        hub.handle()
            .dispatcher()
            .catalog()
            .get("leave.shared")
            .unwrap()
            .providers
            .len(),
        SPOKES
    );

    // All at once: the sockets just go.
    drop(spokes);

    let catalog = hub.handle().dispatcher().catalog().clone();
    let mut left = usize::MAX;
    for _ in 0..600 {
        left = active_rows(&hub).await;
        let providers = catalog.get("leave.shared").unwrap().providers.len();
        if left == 0 && providers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left, 0,
        "registrations still active after every session ended"
    );
    assert!(catalog.list().iter().all(|e| e.providers.is_empty()));
    assert!(hub.handle().sessions().is_empty());
}

#[tokio::test]
async fn a_call_during_a_restart_is_answered_no_provider_until_the_spoke_is_back() {
    let mut hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "returning", &[]).await;
    let echo = |url: String| {
        PeerBuilder::new(url, token.clone()).operation(
            spec("back", "echo", OperationType::Query),
            |request| async move { Ok(request.input) },
        )
    };
    let spoke = echo(hub.ws_url(PrincipalKind::Spoke))
        .connect()
        .await
        .unwrap();
    let client_token = hub.token(PrincipalKind::Client, "waiting", &[]).await;
    let client = PeerBuilder::new(hub.ws_url(PrincipalKind::Client), client_token.clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(client.call("back.echo", json!(1)).await.unwrap()["data"], 1);
    drop(client);
    drop(spoke);

    hub.restart().await;
    // The definition is known again, its provider is not back: the answer
    // is NO_PROVIDER, never a wait (the timeout only guards the test).
    let client = PeerBuilder::new(hub.ws_url(PrincipalKind::Client), client_token.clone())
        .connect()
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), client.call("back.echo", json!(2)))
        .await
        .expect("the call is answered, not left waiting");
    assert_eq!(answer.unwrap_err().code, "NO_PROVIDER");
    let http = hub
        .http(
            "POST",
            "/v1/operations/back.echo/call",
            Some(&client_token),
            Some(r#"{"input": 3}"#),
        )
        .await;
    assert_eq!(http.status, 503, "{}", http.body);
    assert!(http.body.contains("NO_PROVIDER"), "{}", http.body);

    // Once the spoke is back, the same call is served.
    let _spoke = echo(hub.ws_url(PrincipalKind::Spoke))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.call("back.echo", json!(4)).await.unwrap()["data"], 4);
}
