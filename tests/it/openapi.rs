//! The OpenAPI document covers every route of both routers, and is served
//! with an offline viewer.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::start;

/// `(method, path)` of every `.route(PATH, get(..).post(..))` in a router's source.
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        // The call's arguments, up to its balanced closing parenthesis.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find_map(|(j, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(j)
            })
            .expect("balanced parentheses");
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("a path literal").to_owned();
        let mut found = false;
        for method in ["get", "post", "put", "delete", "patch"] {
            let dotted = format!(".{method}(");
            let first = format!("{method}(");
            let after_path = &call[call.find(',').expect("a handler")..];
            if after_path
                .trim_start_matches([',', ' ', '\n'])
                .starts_with(&first)
                || after_path.contains(&dotted)
            {
                out.insert((method.to_owned(), path.clone()));
                found = true;
            }
        }
        assert!(found, "no method found for {path}: {call}");
    }
    out
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_nothing_else() {
    let s = start(&[]).await;
    let doc: Value = s.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["servers"][0]["url"], s.url);
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();

    let app = routes_in(include_str!("../../src/app_server/mod.rs"));
    let mut broker = routes_in(include_str!("../../src/broker/mod.rs"));
    assert!(app.len() > 30 && broker.len() >= 3, "{app:?} {broker:?}");
    // The broker's `/` and `/healthz` repeat app-server paths (one document
    // holds a path once); `/ws` stands for both WebSocket paths.
    broker.retain(|(_, p)| p != "/" && p != "/healthz");
    let routed: BTreeSet<_> = app.union(&broker).cloned().collect();

    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&routed).collect();
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");

    // The broker's operations point at the broker.
    let broker_url = s.running.broker_url();
    assert_eq!(doc["paths"]["/route"]["servers"][0]["url"], broker_url);
    // Every operation says what it answers.
    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn the_docs_viewer_is_served_from_the_binary() {
    let s = start(&[]).await;
    let page = s.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Its script and the config pointing at our document come from us, not a CDN.
    assert!(
        !html.contains("https://"),
        "the viewer loads something from the network"
    );
    let init = s
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    assert_eq!(s.get("/docs/swagger-ui-bundle.js").await.status(), 200);
}

#[test]
fn the_route_scanner_sees_methods() {
    let src = r#".route("/a", get(x)).route("/b", post(y).layer(z(1)))
        .route(
            "/c",
            get(p).post(q),
        )"#;
    let found = routes_in(src);
    let want: BTreeSet<(String, String)> =
        [("get", "/a"), ("post", "/b"), ("get", "/c"), ("post", "/c")]
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
    assert_eq!(found, want);
}
