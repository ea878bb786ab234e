//! Private topics and subscriber tokens: signing, checking, revoking, expiry, limits.

use tideway_core::CoreConfig;
use tideway_http::{ApiKeys, HttpConfig, KeyRing, TokenConfig};
use tideway_store_memory::MemoryConfig;
use tideway_test_util::{API_KEY, Client, Sse, TestGateway, request};
use tokio::net::TcpStream;

const SECRET: &[u8] = b"test-token-secret";

fn config() -> HttpConfig {
    let keys = ApiKeys::from_json(
        r#"{"keys": [
            {"name": "signer", "key": "signer-secret", "scopes": ["sign"], "topics": ["private:user42:*"]},
            {"name": "publisher", "key": "publisher-secret", "scopes": ["publish"]}
        ]}"#,
    )
    .unwrap();
    HttpConfig {
        api_keys: KeyRing::new(keys),
        tokens: TokenConfig {
            secret: SECRET.to_vec(),
            ..TokenConfig::default()
        },
        ..HttpConfig::default()
    }
}

async fn start() -> TestGateway {
    let core = CoreConfig {
        max_connections_per_subject: 2,
        ..CoreConfig::default()
    };
    TestGateway::start_with(config(), MemoryConfig::default(), core).await
}

async fn post(client: &Client, path: &str, key: &str, body: &str) -> tideway_test_util::Response {
    let auth = format!("authorization: Bearer {key}");
    let text = request(
        "POST",
        path,
        &[&auth, "content-type: application/json"],
        body.as_bytes(),
    );
    client.raw(text.as_bytes()).await
}

async fn token(client: &Client, subject: &str, topics: &str, ttl: u64) -> String {
    let body = format!(r#"{{"subject": "{subject}", "topics": [{topics}], "ttlSeconds": {ttl}}}"#);
    let reply = post(client, "/v1/tokens", "signer-secret", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["token"].as_str().unwrap().to_owned()
}

async fn open(client: &Client, path: &str, headers: &[&str]) -> Sse {
    Sse::open(
        TcpStream::connect(client.addr).await.unwrap(),
        path,
        headers,
    )
    .await
}

async fn refused(client: &Client, path: &str, headers: &[&str]) -> (u16, String) {
    let mut sse = open(client, path, headers).await;
    let body = sse.error_body().await;
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .map(|v| v["error"]["code"].as_str().unwrap_or("").to_owned());
    (sse.status, code.unwrap_or(body))
}

#[tokio::test]
async fn signing_needs_the_sign_scope_and_stays_within_the_keys_topics() {
    let gw = start().await;
    let ok = post(
        &gw,
        "/v1/tokens",
        "signer-secret",
        r#"{"subject": "u42", "topics": ["private:user42:*"]}"#,
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.text());
    assert!(ok.json()["expiresAt"].as_u64().unwrap() > tideway_core::unix_millis());
    // Token ids are 128 random bits from the OS: none repeats, none can be guessed.
    let jti = |token: &serde_json::Value| {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&["tideway"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            token.as_str().expect("a token"),
            &jsonwebtoken::DecodingKey::from_secret(SECRET),
            &validation,
        )
        .expect("our own token decodes")
        .claims;
        claims["jti"].as_str().expect("a jti").to_owned()
    };
    let again = post(
        &gw,
        "/v1/tokens",
        "signer-secret",
        r#"{"subject": "u42", "topics": ["private:user42:*"]}"#,
    )
    .await;
    let (first, second) = (jti(&ok.json()["token"]), jti(&again.json()["token"]));
    assert_eq!(first.len(), 32, "{first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_ne!(first, second);
    let wider = post(
        &gw,
        "/v1/tokens",
        "signer-secret",
        r#"{"subject": "u42", "topics": ["private:*"]}"#,
    )
    .await;
    assert_eq!(
        (wider.status, wider.error_code().as_str()),
        (403, "topic_not_allowed")
    );
    let scope = post(
        &gw,
        "/v1/tokens",
        "publisher-secret",
        r#"{"subject": "u42", "topics": ["private:user42:*"]}"#,
    )
    .await;
    assert_eq!(
        (scope.status, scope.error_code().as_str()),
        (403, "forbidden")
    );
    let ttl = post(
        &gw,
        "/v1/tokens",
        "signer-secret",
        r#"{"subject": "u42", "topics": ["private:user42:a"], "ttlSeconds": 999999}"#,
    )
    .await;
    assert_eq!(
        (ttl.status, ttl.error_code().as_str()),
        (400, "invalid_body")
    );
    let junk = post(&gw, "/v1/tokens", "signer-secret", r#"{"topics": "x"}"#).await;
    assert_eq!(
        (junk.status, junk.error_code().as_str()),
        (400, "invalid_body")
    );

    let disabled = TestGateway::start().await;
    let reply = post(
        &disabled,
        "/v1/tokens",
        API_KEY,
        r#"{"subject": "u", "topics": ["private:a"]}"#,
    )
    .await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (503, "tokens_disabled")
    );
}

#[tokio::test]
async fn private_topics_admit_only_a_valid_token_that_grants_them() {
    let gw = start().await;
    let granted = token(&gw, "u42", r#""private:user42:*""#, 600).await;
    let path = "/v1/stream?topic=private:user42:inbox,news";
    assert_eq!(refused(&gw, path, &[]).await, (401, "missing_token".into()));
    assert_eq!(
        refused(&gw, path, &["authorization: Bearer nonsense"]).await,
        (401, "invalid_token".into())
    );
    let other = refused(
        &gw,
        "/v1/stream?topic=private:user43:inbox",
        &[&format!("authorization: Bearer {granted}")],
    )
    .await;
    assert_eq!(other, (403, "topic_not_granted".into()));
    // Signed with another secret, or for another audience: refused.
    let now = tideway_core::unix_millis() / 1000;
    let forge = |secret: &[u8], aud: &str, exp: u64| {
        let claims = serde_json::json!({"sub": "u42", "aud": aud, "exp": exp, "iat": now, "jti": "f", "topics": ["private:user42:*"], "kid": "signer"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    for (forged, code) in [
        (forge(b"wrong-secret", "tideway", now + 60), "invalid_token"),
        (forge(SECRET, "elsewhere", now + 60), "invalid_token"),
        (forge(SECRET, "tideway", now - 5), "token_expired"),
    ] {
        assert_eq!(
            refused(&gw, path, &[&format!("authorization: Bearer {forged}")]).await,
            (401, code.into())
        );
    }

    // By header, or by query for EventSource; public topics stay anonymous.
    let mut by_header = open(&gw, path, &[&format!("authorization: Bearer {granted}")]).await;
    assert_eq!(by_header.status, 200);
    let mut by_query = open(
        &gw,
        &format!("/v1/stream?topic=private:user42:inbox&token={granted}"),
        &[],
    )
    .await;
    assert_eq!(by_query.status, 200);
    let mut anonymous = gw.subscribe("/v1/stream?topic=news", &[]).await;
    gw.publish("private:user42:inbox,news", "m1", "hello").await;
    for sse in [&mut by_header, &mut by_query] {
        let _hello = sse.next_block().await;
        assert_eq!(sse.next_event().await.unwrap().id.as_deref(), Some("m1"));
    }
    assert_eq!(
        anonymous.next_event().await.unwrap().field("topic"),
        Some("news")
    );
    let ws = gw
        .ws_handshake("/v1/ws?topic=private:user42:inbox", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(
        (ws.status, ws.error_code().as_str()),
        (401, "missing_token")
    );
    // A second subject: this test's gateway allows two connections per subject.
    let for_ws = token(&gw, "u42-ws", r#""private:user42:*""#, 600).await;
    let mut ws = gw
        .ws(
            &format!("/v1/ws?topic=private:user42:inbox&token={for_ws}"),
            &[],
        )
        .await;
    gw.publish("private:user42:inbox", "m2", "over websocket")
        .await;
    assert_eq!(ws.next_json().await["id"], "m2");
}

async fn ended_with(sse: &mut Sse) -> String {
    loop {
        let block = sse.next_event().await.expect("an event before the end");
        if block.event.as_deref() == Some("tideway.revoked") {
            let data: serde_json::Value =
                serde_json::from_str(block.data.as_deref().unwrap()).unwrap();
            assert!(sse.next_block().await.is_none(), "the stream ends");
            return data["reason"].as_str().unwrap().to_owned();
        }
    }
}

#[tokio::test]
async fn revoking_a_token_ends_its_subscriptions_and_refuses_it_after() {
    let gw = start().await;
    let granted = token(&gw, "u42", r#""private:user42:*""#, 600).await;
    let auth = format!("authorization: Bearer {granted}");
    let mut sse = open(&gw, "/v1/stream?topic=private:user42:inbox", &[&auth]).await;
    assert_eq!(sse.status, 200);
    let reply = post(
        &gw,
        "/v1/tokens/revoke",
        "signer-secret",
        &format!(r#"{{"token": "{granted}"}}"#),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(ended_with(&mut sse).await, "token_revoked");
    assert_eq!(
        refused(&gw, "/v1/stream?topic=private:user42:inbox", &[&auth]).await,
        (401, "token_revoked".into())
    );
}

#[tokio::test]
async fn a_token_that_expires_ends_its_subscriptions() {
    let gw = start().await;
    let short = token(&gw, "u42", r#""private:user42:*""#, 1).await;
    let mut sse = open(
        &gw,
        "/v1/stream?topic=private:user42:inbox",
        &[&format!("authorization: Bearer {short}")],
    )
    .await;
    assert_eq!(sse.status, 200);
    assert_eq!(ended_with(&mut sse).await, "token_expired");
}

#[tokio::test]
async fn removing_the_signing_key_ends_its_tokens_subscriptions() {
    let http = config();
    let ring = http.api_keys.clone();
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let granted = token(&gw, "u42", r#""private:user42:*""#, 600).await;
    let mut sse = open(
        &gw,
        "/v1/stream?topic=private:user42:inbox",
        &[&format!("authorization: Bearer {granted}")],
    )
    .await;
    assert_eq!(sse.status, 200);
    ring.replace(ApiKeys::parse("someone-else"));
    assert_eq!(ended_with(&mut sse).await, "key_revoked");
}

#[tokio::test]
async fn a_signing_key_that_expires_ends_its_tokens_subscriptions() {
    let expires = tideway_core::unix_millis() + 1500;
    let keys = ApiKeys::from_json(&format!(
        r#"{{"keys": [{{"name": "brief", "key": "brief-secret", "scopes": ["sign"], "expiresAt": {expires}}}]}}"#
    ))
    .unwrap();
    let http = HttpConfig {
        api_keys: KeyRing::new(keys),
        tokens: TokenConfig {
            secret: SECRET.to_vec(),
            ..TokenConfig::default()
        },
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let signed = post(
        &gw,
        "/v1/tokens",
        "brief-secret",
        r#"{"subject": "u1", "topics": ["private:u1:*"]}"#,
    )
    .await;
    assert_eq!(signed.status, 201, "{}", signed.text());
    let token = signed.json()["token"].as_str().unwrap().to_owned();
    let mut sse = open(
        &gw,
        "/v1/stream?topic=private:u1:inbox",
        &[&format!("authorization: Bearer {token}")],
    )
    .await;
    assert_eq!(sse.status, 200);
    // Nothing replaces the keys: the key's own expiry wakes the watch.
    assert_eq!(ended_with(&mut sse).await, "key_revoked");
}

#[tokio::test]
async fn connections_per_token_subject_are_limited() {
    let gw = start().await;
    let granted = token(&gw, "busy-user", r#""private:user42:*""#, 600).await;
    let auth = format!("authorization: Bearer {granted}");
    let _a = open(&gw, "/v1/stream?topic=private:user42:a", &[&auth]).await;
    let _b = open(&gw, "/v1/stream?topic=private:user42:b", &[&auth]).await;
    assert_eq!(
        refused(&gw, "/v1/stream?topic=private:user42:c", &[&auth]).await,
        (429, "too_many_connections".into())
    );
    let other = token(&gw, "calm-user", r#""private:user42:*""#, 600).await;
    let ok = open(
        &gw,
        "/v1/stream?topic=private:user42:c",
        &[&format!("authorization: Bearer {other}")],
    )
    .await;
    assert_eq!(ok.status, 200);
}
