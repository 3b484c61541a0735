//! Retry hints (spec §15) over real sockets: 429 says when the key's bucket accepts the
//! next event; 503 for the connection cap and for a publish during shutdown carries one.

mod common;

use std::time::{Duration, Instant};

use axon_relay::client::ClientError;
use axon_relay::protocol::frame::encode_publish_frame;
use common::*;

#[tokio::test]
async fn rate_limited_publish_says_when_the_next_one_is_accepted() {
    let relay = TestRelay::start_with(|config| {
        config.limits.publish_per_second = 2;
        config.limits.publish_burst = 1;
    })
    .await;
    let client = relay.connect(&alice()).await;
    client.publish(&event(&alice(), 1000, "1", vec![])).await.expect("within burst");
    let error = client.publish(&event(&alice(), 1000, "2", vec![])).await.expect_err("over the rate");
    // The hint counts from the relay's refusal; the client can only count from receiving it,
    // which is later. (Counting from before the send made the retry early by the time the
    // publish took to reach the relay, and a loaded machine got a second 429.)
    let refused = Instant::now();
    assert_eq!(error.code(), Some(429));
    let hint = error.retry_after().expect("429 carries retry_after_ms");
    assert!(hint > Duration::ZERO && hint <= Duration::from_millis(500), "one token at 2/s: {hint:?}");
    // Waiting as told is enough: the retry is accepted.
    tokio::time::sleep_until((refused + hint).into()).await;
    client.publish(&event(&alice(), 1000, "3", vec![])).await.expect("accepted after the hint");
}

#[tokio::test]
async fn connection_cap_503_carries_a_retry_hint() {
    let relay = TestRelay::start_with(|config| config.limits.max_connections = 1).await;
    let _first = relay.connect(&alice()).await;
    let (mut raw, _) = tokio_tungstenite::connect_async(&relay.url).await.expect("handshake");
    let error = expect_error(&mut raw, 503).await;
    assert_eq!(error.retry_after_ms, Some(1000));
    // The client library reports it as a rejection with the hint.
    match relay.try_connect(&bob()).await {
        Err(error @ ClientError::Rejected { code: 503, .. }) => {
            assert_eq!(error.retry_after(), Some(Duration::from_millis(1000)))
        }
        other => panic!("expected 503 with a hint, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_during_shutdown_gets_503_with_a_retry_hint() {
    let mut relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let handle = relay.handle.take().expect("running");
    let stopping = tokio::spawn(handle.shutdown());
    // Publishes keep arriving while the relay drains: each gets 503 with a hint.
    let mut hinted = 0;
    for round in 0..50 {
        let late = event(&alice(), 1000, &format!("late {round}"), vec![]);
        send_raw(&mut socket, encode_publish_frame(&late.encode())).await;
        match raw_frame(&mut socket).await {
            RawItem::Frame(axon_relay::protocol::Frame::Error(error)) if error.code == 503 => {
                assert_eq!(error.retry_after_ms, Some(1000), "{error:?}");
                hinted += 1;
                break;
            }
            RawItem::Frame(_) | RawItem::Ping => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => break,
        }
    }
    assert_eq!(hinted, 1, "a publish during the drain was answered 503 with retry_after_ms");
    stopping.await.expect("shutdown");
}
