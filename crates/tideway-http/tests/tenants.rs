//! Tenants: a key's topics live in its tenant's namespace, so one tenant never sees or
//! publishes into another's.

use tideway_core::CoreConfig;
use tideway_http::{ApiKeys, HttpConfig, KeyRing, TokenConfig};
use tideway_store_memory::MemoryConfig;
use tideway_test_util::{API_KEY, Client, Sse, TestGateway, request};
use tokio::net::TcpStream;

fn config() -> HttpConfig {
    let keys = ApiKeys::from_json(
        r#"{"keys": [
            {"name": "acme", "key": "acme-secret", "tenant": "acme", "scopes": ["publish", "admin", "sign"]},
            {"name": "globex", "key": "globex-secret", "tenant": "globex", "scopes": ["publish", "admin", "sign"]}
        ]}"#,
    )
    .unwrap();
    HttpConfig {
        api_keys: KeyRing::new(keys),
        tokens: TokenConfig {
            secret: b"tenant-token-secret".to_vec(),
            ..TokenConfig::default()
        },
        ..HttpConfig::default()
    }
}

async fn publish_as(
    client: &Client,
    key: &str,
    topic: &str,
    id: &str,
) -> tideway_test_util::Response {
    let headers = [
        format!("authorization: Bearer {key}"),
        format!("x-sse-topic: {topic}"),
        format!("x-sse-id: {id}"),
    ];
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    client
        .raw(request("POST", "/v1/publish", &headers, id.as_bytes()).as_bytes())
        .await
}

async fn admin_as(client: &Client, key: &str, path: &str) -> serde_json::Value {
    client
        .get(path, &[&format!("authorization: Bearer {key}")])
        .await
        .json()
}

#[tokio::test]
async fn tenants_publish_and_read_only_their_own_topics() {
    let gw =
        TestGateway::start_with(config(), MemoryConfig::default(), CoreConfig::default()).await;
    let mut acme = gw.subscribe("/v1/stream?topic=news&tenant=acme", &[]).await;
    let mut globex = gw
        .subscribe("/v1/stream?topic=news", &["x-sse-tenant: globex"])
        .await;
    let mut nobody = gw.subscribe("/v1/stream?topic=news", &[]).await;

    let reply = publish_as(&gw, "acme-secret", "news", "a1").await;
    assert_eq!(reply.status, 202);
    assert_eq!(
        reply.json()["topics"][0]["topic"],
        "news",
        "named as the tenant knows it"
    );
    publish_as(&gw, "globex-secret", "news", "g1").await;
    publish_as(&gw, API_KEY, "news", "plain").await;
    for (sse, expected) in [
        (&mut acme, "a1"),
        (&mut globex, "g1"),
        (&mut nobody, "plain"),
    ] {
        let event = sse.next_event().await.unwrap();
        assert_eq!(
            event.id.as_deref(),
            Some(expected),
            "each namespace gets its own"
        );
        assert_eq!(event.field("topic"), Some("news"));
    }
    // A publisher cannot reach into a tenant by naming its namespace.
    let forged = publish_as(&gw, API_KEY, "acme~news", "x").await;
    assert_eq!(
        (forged.status, forged.error_code().as_str()),
        (400, "invalid_topic")
    );

    // Admin: a tenant's key sees its own topics and connections only, under their names.
    let topics = admin_as(&gw, "acme-secret", "/v1/admin/topics").await;
    assert_eq!(topics["total"], 1);
    assert_eq!(topics["items"][0]["name"], "news");
    let connections = admin_as(&gw, "acme-secret", "/v1/admin/connections").await;
    assert_eq!(connections["total"], 1);
    assert_eq!(
        connections["items"][0]["topics"],
        serde_json::json!(["news"])
    );
    let tail = admin_as(&gw, "globex-secret", "/v1/admin/topics/news/tail").await;
    assert_eq!(tail["items"][0]["id"], "g1", "globex's news, not acme's");
    // The operator's full-access key sees every namespace.
    let all = admin_as(&gw, API_KEY, "/v1/admin/topics").await;
    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme~news", "globex~news", "news"]);
    let bad = gw
        .get("/v1/stream?topic=news&tenant=Not%20Valid", &[])
        .await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_tenant")
    );
}

#[tokio::test]
async fn a_tenants_token_opens_its_private_topics_and_no_others() {
    let gw =
        TestGateway::start_with(config(), MemoryConfig::default(), CoreConfig::default()).await;
    let auth = "authorization: Bearer acme-secret";
    let body = br#"{"subject": "u1", "topics": ["private:u1:*"]}"#;
    let signed = gw
        .raw(request("POST", "/v1/tokens", &[auth], body).as_bytes())
        .await;
    assert_eq!(signed.status, 201, "{}", signed.text());
    let token = signed.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("authorization: Bearer {token}");
    let mut sse = Sse::open(
        TcpStream::connect(gw.addr).await.unwrap(),
        "/v1/stream?topic=private:u1:inbox",
        &[&bearer],
    )
    .await;
    assert_eq!(sse.status, 200);
    publish_as(&gw, "globex-secret", "private:u1:inbox", "from-globex").await;
    publish_as(&gw, "acme-secret", "private:u1:inbox", "from-acme").await;
    let _hello = sse.next_block().await;
    assert_eq!(
        sse.next_event().await.unwrap().id.as_deref(),
        Some("from-acme")
    );
    // Asking for another tenant with acme's token is refused.
    let mut other = Sse::open(
        TcpStream::connect(gw.addr).await.unwrap(),
        "/v1/stream?topic=private:u1:inbox&tenant=globex",
        &[&bearer],
    )
    .await;
    assert_eq!(other.status, 403);
    assert!(other.error_body().await.contains("tenant_not_granted"));
    // Only acme (or a key of the whole gateway) may revoke acme's token.
    let revoke = format!(r#"{{"token": "{token}"}}"#);
    let by_globex = gw
        .raw(
            request(
                "POST",
                "/v1/tokens/revoke",
                &["authorization: Bearer globex-secret"],
                revoke.as_bytes(),
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(
        (by_globex.status, by_globex.error_code().as_str()),
        (403, "forbidden")
    );
    let by_acme = gw
        .raw(request("POST", "/v1/tokens/revoke", &[auth], revoke.as_bytes()).as_bytes())
        .await;
    assert_eq!(by_acme.status, 200, "{}", by_acme.text());
}
