//! Unit tests of the relay's pure parts: the publish pipeline before storage
//! ([`super::ingest::admit`]), the fan-out index ([`super::fanout`]) and the outbound
//! queue's three modes ([`super::outbound`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;

use super::access::Access;
use super::config::LimitsConfig;
use super::fanout::Fanout;
use super::ingest::{admit, Admitted, Publisher, Rejection};
use super::keys::KeyCache;
use super::metrics::Metrics;
use super::outbound::{Full, OutFrame, Outbound};
use super::rate::RateLimiter;
use super::store::{Accepted, Committed};
use crate::protocol::tags::{EXPIRES_AT, P};
use crate::protocol::{ErrorCode, Event, Filter, Frame, PublicKey, RawEvent, Tag, Viewer};

const NOW: u64 = 1_700_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn pubkey(seed: u8) -> PublicKey {
    key(seed).verifying_key().to_bytes()
}

fn signed(seed: u8, kind: u16, tags: Vec<Tag>) -> Event {
    Event::sign(&key(seed), NOW, kind, b"hello".to_vec(), tags).expect("sign")
}

/// Admin 1, allowed 2; 3 is a stranger.
fn access() -> Access {
    Access::new(vec![pubkey(1)], vec![pubkey(2)])
}

fn run_admit(event: &Event, limits: &LimitsConfig, limiter: &RateLimiter<PublicKey>) -> Result<Admitted, Rejection> {
    let keys = KeyCache::default();
    let publisher = Publisher { key: pubkey(2), limiter, keys: &keys };
    admit(RawEvent(Bytes::from(event.encode())), &access(), limits, &publisher, NOW)
}

fn code_of(outcome: Result<Admitted, Rejection>) -> ErrorCode {
    match outcome {
        Err(rejection) => rejection.error.code,
        Ok(_) => panic!("expected a rejection"),
    }
}

#[test]
fn admit_stores_plain_kinds_and_fans_out_ephemeral_ones() {
    let limiter = RateLimiter::default();
    let limits = LimitsConfig::default();
    assert!(matches!(run_admit(&signed(2, 1000, vec![]), &limits, &limiter), Ok(Admitted::Store(_))));
    assert!(matches!(run_admit(&signed(2, 3000, vec![]), &limits, &limiter), Ok(Admitted::Ephemeral(_))));
}

#[test]
fn admit_applies_the_rules_in_spec_order() {
    let limiter = RateLimiter::default();
    let limits = LimitsConfig::default();
    assert_eq!(code_of(run_admit(&signed(3, 1000, vec![]), &limits, &limiter)), ErrorCode::Restricted);
    assert_eq!(code_of(run_admit(&signed(2, 9002, vec![]), &limits, &limiter)), ErrorCode::Restricted);
    let expired = signed(2, 5000, vec![Tag::new(EXPIRES_AT, [NOW.to_string()])]);
    assert_eq!(code_of(run_admit(&expired, &limits, &limiter)), ErrorCode::Expired);
    let future = Event::sign(&key(2), NOW + 10_000, 1000, Vec::new(), vec![]).expect("sign");
    assert_eq!(code_of(run_admit(&future, &limits, &limiter)), ErrorCode::Invalid);
    let mut forged = signed(2, 1000, vec![]);
    forged.sig[0] ^= 1;
    let rejection = run_admit(&forged, &limits, &limiter).expect_err("bad signature");
    assert_eq!((rejection.error.code, rejection.id), (ErrorCode::Invalid, Some(forged.id)));
    let bad_allow = signed(1, 9000, vec![Tag::new(P, ["not hex"])]);
    assert_eq!(code_of(run_admit(&bad_allow, &limits, &limiter)), ErrorCode::Invalid);
}

#[test]
fn admit_rate_limits_per_key_with_a_retry_hint() {
    let limiter = RateLimiter::default();
    let limits = LimitsConfig { publish_per_second: 10, publish_burst: 1, ..LimitsConfig::default() };
    assert!(run_admit(&signed(2, 1000, vec![]), &limits, &limiter).is_ok());
    let rejection = run_admit(&signed(2, 1001, vec![]), &limits, &limiter).expect_err("over the rate");
    assert_eq!(rejection.error.code, ErrorCode::RateLimited);
    let hint = rejection.error.retry_after_ms.expect("429 carries retry_after_ms");
    assert!((1..=100).contains(&hint), "one token at 10/s: {hint} ms");
}

fn committed(seq: u64, event: Event) -> Committed {
    let raw = Bytes::from(event.encode());
    Committed { seq, accepted: Arc::new(Accepted { event, raw, expires_at: None }) }
}

/// Seqs of the EVENT frames queued on `outbound`.
fn delivered(outbound: &Outbound) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Some(Some(frame)) = futures_util::FutureExt::now_or_never(async {
        if outbound.is_empty() {
            None
        } else {
            outbound.pop().await
        }
    }) {
        if let OutFrame::Binary(bytes) = frame {
            if let Ok(Frame::Event(message)) = Frame::decode(&Bytes::from(bytes)) {
                seqs.push(message.seq);
            }
        }
    }
    seqs
}

#[test]
fn fanout_index_delivers_matching_visible_events_in_seq_order() {
    let fanout = Fanout::new(Arc::new(Metrics::new()));
    let viewer = Viewer { pubkey: pubkey(2), is_admin: false };
    let by_kind = Arc::new(Outbound::new(16));
    let kinds = Filter { kinds: Some(vec![1000, 2000]), ..Filter::default() };
    let registered = fanout.subscribe(1, "kinds", vec![kinds], viewer, by_kind.clone(), None, 16);
    assert_eq!(registered.snapshot, 0);
    let by_tag = Arc::new(Outbound::new(16));
    let topic = Filter {
        tags: Some(vec![crate::protocol::TagFilter { name: "t".into(), values: vec!["x".into()] }]),
        ..Filter::default()
    };
    fanout.subscribe(2, "tag", vec![topic], viewer, by_tag.clone(), None, 16);
    fanout.go_live(1, "kinds").expect("live");
    fanout.go_live(2, "tag").expect("live");
    fanout.dispatch_committed(&[
        committed(1, signed(2, 1000, vec![Tag::new("t", ["x"])])),
        committed(2, signed(2, 1001, vec![Tag::new("t", ["y"])])),
        // A DM between others: invisible to key 2.
        committed(3, signed(1, 2000, vec![Tag::new(P, [hex::encode(pubkey(3))])])),
        // A DM to key 2: visible.
        committed(4, signed(1, 2000, vec![Tag::new(P, [hex::encode(pubkey(2))])])),
    ]);
    assert_eq!(delivered(&by_kind), vec![1, 4]);
    assert_eq!(delivered(&by_tag), vec![1]);
    fanout.unsubscribe(1, "kinds");
    fanout.dispatch_committed(&[committed(5, signed(2, 1000, vec![]))]);
    assert!(delivered(&by_kind).is_empty(), "unsubscribed");
    let late = fanout.subscribe(1, "again", vec![Filter::default()], viewer, by_kind.clone(), None, 16);
    assert_eq!(late.snapshot, 5, "a new subscription starts at the highest seq fanned out");
}

#[test]
fn outbound_try_push_is_bounded_push_always_is_not() {
    let outbound = Outbound::new(2);
    assert_eq!(outbound.try_push(OutFrame::Ping), Ok(()));
    assert_eq!(outbound.try_push(OutFrame::Ping), Ok(()));
    assert_eq!(outbound.try_push(OutFrame::Ping), Err(Full));
    outbound.push_always(OutFrame::Close(1000, "bye".into()));
    assert_eq!(outbound.len(), 3, "push_always goes past the bound");
    outbound.close();
    assert_eq!(outbound.try_push(OutFrame::Ping), Err(Full), "closed");
}

#[tokio::test]
async fn outbound_push_waits_for_room_and_pop_keeps_order() {
    let outbound = Arc::new(Outbound::new(1));
    outbound.try_push(OutFrame::Binary(vec![1])).expect("room");
    let waiting = tokio::spawn({
        let outbound = outbound.clone();
        async move { outbound.push(OutFrame::Binary(vec![2])).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "push waits while the queue is full");
    assert_eq!(outbound.pop().await, Some(OutFrame::Binary(vec![1])));
    assert!(waiting.await.expect("task"), "push went through once there was room");
    assert_eq!(outbound.pop().await, Some(OutFrame::Binary(vec![2])));
    outbound.close();
    assert_eq!(outbound.pop().await, None, "closed and drained");
}
