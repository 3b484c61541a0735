//! Publish, subscribe, EOSE, live delivery and HTTP, end to end over real sockets.

mod common;

use axon_relay::client::SubItem;
use axon_relay::protocol::Filter;
use common::*;

#[tokio::test]
async fn publish_then_subscribe_gets_stored_then_live() {
    let relay = TestRelay::start().await;
    let alice_client = relay.connect(&alice()).await;
    let first = event(&alice(), 1000, "first", vec![]);
    let seq = alice_client.publish(&first).await.expect("publish").expect("stored events carry a seq");
    assert!(seq >= 1);

    let bob_client = relay.connect(&bob()).await;
    let mut subscription = bob_client
        .subscribe("s", vec![Filter { kinds: Some(vec![1000]), ..Filter::default() }], None)
        .await
        .expect("subscribe");
    assert_eq!(subscription.stored().await.expect("stored"), vec![(first.clone(), seq)]);

    let second = event(&alice(), 1000, "second", vec![]);
    let second_seq = alice_client.publish(&second).await.expect("publish").expect("seq");
    assert!(second_seq > seq, "seq strictly increases");
    assert_eq!(next_event(&mut subscription).await, (second, second_seq));
}

#[tokio::test]
async fn stored_events_come_back_byte_for_byte() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let published = event(&alice(), 1000, "bytes", vec![tag("b", "2"), tag("a", "1")]);
    client.publish(&published).await.expect("publish");
    let mut subscription = client.subscribe("s", vec![Filter::default()], None).await.expect("subscribe");
    match next_item(&mut subscription).await {
        SubItem::Event { raw, .. } => assert_eq!(raw.as_bytes(), &published.encode()[..]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn health_and_info() {
    let relay = TestRelay::start().await;
    assert_eq!(http_get(&relay, "/health", None).await, (200, "ok".to_string()));
    let (status, body) = http_get(&relay, "/info", None).await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(info["relay_url"], RELAY_URL);
    assert_eq!(info["auth"], "allowlist");
    assert_eq!(info["limits"]["max_limit"], 500);
    assert_eq!(info["kinds"].as_array().map(Vec::len), Some(11));
    let (status, body) = http_get(&relay, "/", Some("application/json")).await;
    assert_eq!(status, 200);
    assert!(body.starts_with('{'));
    assert_eq!(http_get(&relay, "/nope", None).await.0, 404);
}

#[tokio::test]
async fn a_wss_url_fails_with_an_error_not_a_panic() {
    // A plain TCP peer that hangs up during the TLS handshake. Before rustls had a crypto
    // provider, building the TLS client panicked inside `Client::connect`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { drop(listener.accept().await) });
    let url = format!("wss://localhost:{port}/");
    let outcome = tokio::spawn(async move { axon_relay::client::Client::connect(&url, &url, &alice()).await.is_err() });
    assert!(outcome.await.expect("no panic"), "connecting to a non-TLS peer over wss is an error");
}
