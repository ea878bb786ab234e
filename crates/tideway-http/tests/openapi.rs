//! `docs/openapi.json` against the real server: every route the server has is documented,
//! and every answer it gives to the requests below is a documented status with, for
//! errors, a documented code.

use tideway_http::{ApiKeys, HttpConfig, KeyRing, TokenConfig};
use tideway_store_memory::MemoryConfig;
use tideway_test_util::{API_KEY, TestGateway, request};

const DOC: &str = include_str!("../../../docs/openapi.json");

/// (method, documented path, concrete path, headers, body): requests that reach each
/// operation, successful and not.
fn requests() -> Vec<(
    &'static str,
    &'static str,
    String,
    Vec<String>,
    &'static str,
)> {
    let key = format!("authorization: Bearer {API_KEY}");
    let publish = |topic: &str, auth: &str| {
        vec![
            auth.to_owned(),
            format!("x-sse-topic: {topic}"),
            "x-sse-id: 1".to_owned(),
        ]
    };
    vec![
        (
            "get",
            "/v1/stream",
            "/v1/stream?topic=bad%20topic".into(),
            vec![],
            "",
        ),
        (
            "get",
            "/v1/stream",
            "/v1/stream?topic=private:x".into(),
            vec![],
            "",
        ),
        (
            "options",
            "/v1/stream",
            "/v1/stream".into(),
            vec!["origin: https://a.example".into()],
            "",
        ),
        ("get", "/v1/ws", "/v1/ws?topic=a".into(), vec![], ""),
        (
            "options",
            "/v1/ws",
            "/v1/ws".into(),
            vec!["origin: https://a.example".into()],
            "",
        ),
        (
            "options",
            "/v1/publish",
            "/v1/publish".into(),
            vec!["origin: https://a.example".into()],
            "",
        ),
        (
            "post",
            "/v1/publish",
            "/v1/publish".into(),
            publish("nobody", &key),
            "x",
        ),
        (
            "post",
            "/v1/publish",
            "/v1/publish".into(),
            publish("watched", &key),
            "x",
        ),
        (
            "post",
            "/v1/publish",
            "/v1/publish".into(),
            publish("a", "authorization: Bearer wrong"),
            "x",
        ),
        (
            "post",
            "/v1/publish",
            "/v1/publish".into(),
            publish("a b", &key),
            "x",
        ),
        (
            "options",
            "/v1/publish/batch",
            "/v1/publish/batch".into(),
            vec!["origin: https://a.example".into()],
            "",
        ),
        (
            "post",
            "/v1/publish/batch",
            "/v1/publish/batch".into(),
            vec![key.clone()],
            r#"{"events": [{"topics": ["watched"], "id": "b1", "data": "x"}, {"topics": ["a b"], "id": "b2", "data": "x"}]}"#,
        ),
        (
            "post",
            "/v1/publish/batch",
            "/v1/publish/batch".into(),
            vec![key.clone()],
            r#"{"events": []}"#,
        ),
        (
            "post",
            "/v1/tokens",
            "/v1/tokens".into(),
            vec![key.clone()],
            r#"{"subject": "s", "topics": ["private:s:*"]}"#,
        ),
        (
            "post",
            "/v1/tokens",
            "/v1/tokens".into(),
            vec![key.clone()],
            "not json",
        ),
        (
            "post",
            "/v1/tokens/revoke",
            "/v1/tokens/revoke".into(),
            vec![key.clone()],
            r#"{"token": "nope"}"#,
        ),
        (
            "get",
            "/v1/admin/topics",
            "/v1/admin/topics?pageSize=2".into(),
            vec![key.clone()],
            "",
        ),
        (
            "get",
            "/v1/admin/topics",
            "/v1/admin/topics?page=0".into(),
            vec![key.clone()],
            "",
        ),
        (
            "get",
            "/v1/admin/connections",
            "/v1/admin/connections".into(),
            vec![key.clone()],
            "",
        ),
        (
            "get",
            "/v1/admin/connections",
            "/v1/admin/connections".into(),
            vec![],
            "",
        ),
        (
            "get",
            "/v1/admin/topics/{topic}/tail",
            "/v1/admin/topics/watched/tail".into(),
            vec![key.clone()],
            "",
        ),
        (
            "get",
            "/v1/admin/topics/{topic}/tail",
            "/v1/admin/topics/gone/tail".into(),
            vec![key.clone()],
            "",
        ),
        (
            "get",
            "/v1/admin/nodes",
            "/v1/admin/nodes".into(),
            vec![key.clone()],
            "",
        ),
        ("get", "/healthz", "/healthz".into(), vec![], ""),
        ("get", "/readyz", "/readyz".into(), vec![], ""),
        ("get", "/metrics", "/metrics".into(), vec![], ""),
        ("get", "/admin", "/admin".into(), vec![], ""),
        (
            "get",
            "/admin/{path}",
            "/admin/index.html".into(),
            vec![],
            "",
        ),
    ]
}

#[tokio::test]
async fn every_answer_of_the_server_is_documented() {
    let doc: serde_json::Value = serde_json::from_str(DOC).expect("openapi.json is JSON");
    let codes: Vec<&str> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
    let http = HttpConfig {
        api_keys: KeyRing::new(ApiKeys::default()),
        tokens: TokenConfig {
            secret: b"s".to_vec(),
            ..TokenConfig::default()
        },
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), Default::default()).await;
    let _watcher = gw.subscribe("/v1/stream?topic=watched", &[]).await;
    let mut reached = std::collections::BTreeSet::new();
    for (method, documented, path, headers, body) in requests() {
        let operation = &doc["paths"][documented][method];
        assert!(
            operation.is_object(),
            "{method} {documented} is not in docs/openapi.json"
        );
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let reply = gw
            .raw(request(&method.to_uppercase(), &path, &headers, body.as_bytes()).as_bytes())
            .await;
        let status = reply.status.to_string();
        assert!(
            operation["responses"][&status].is_object(),
            "{method} {path} answered {status}, which docs/openapi.json does not list: {}",
            reply.text()
        );
        if reply.status >= 400 {
            let code = reply.error_code();
            assert!(
                codes.contains(&code.as_str()),
                "{method} {path}: error code {code:?} is not documented"
            );
        }
        reached.insert((method, documented));
    }
    // Every documented operation was reached above, so none is documented and untested.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let known = reached.iter().any(|(m, p)| m == method && p == path);
            assert!(
                known,
                "{method} {path} is documented but no request here reaches it"
            );
        }
    }
    // And a route the server does not have is a documented 404.
    assert_eq!(gw.get("/v1/nothing", &[]).await.error_code(), "not_found");
}

#[test]
fn the_documented_error_codes_are_exactly_the_servers() {
    let doc: serde_json::Value = serde_json::from_str(DOC).expect("openapi.json is JSON");
    let documented: std::collections::BTreeSet<&str> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("the error codes are listed")
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
    let answered: std::collections::BTreeSet<&str> = tideway_http::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(
        answered.difference(&documented).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "answered, not documented"
    );
    assert_eq!(
        documented.difference(&answered).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "documented, never answered"
    );
}
