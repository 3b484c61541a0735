//! Benchmarks of the protocol hot paths: id computation, strict signature verification,
//! and the frame decode/encode work the relay does for every published or delivered event.
//!
//! Every benchmark works on one realistic event: kind 1000, 200 bytes of content, and
//! three tags (`t`, `p`, `e`). Run with `cargo bench --bench protocol`.

use std::hint::black_box;
use std::time::Duration;

use axon_relay::protocol::event::decode_and_validate;
use axon_relay::protocol::frame::{encode_event_frame, encode_publish_frame, EventMessage};
use axon_relay::protocol::{Event, Frame, Limits, RawEvent, Tag};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// Events verified together by `verify/batch_64`.
const BATCH: usize = 64;
/// `sub_id` and `seq` used for EVENT frames.
const SUB_ID: &str = "agent-feed-1";
const SEQ: u64 = 1_234_567;

/// A deterministic signing key derived from `index`.
fn key(index: usize) -> SigningKey {
    let mut seed = [0x42u8; 32];
    seed[..8].copy_from_slice(&(index as u64).to_be_bytes());
    SigningKey::from_bytes(&seed)
}

/// A realistic event signed by `key(index)`: 200 bytes of UTF-8 content and three tags.
fn event(index: usize) -> Event {
    let mut content = format!(
        "Job {index} finished: summarised 3 documents (41 pages) into 5 bullet points; \
         tokens in 18211, out 402; model small-v2; wall time 4.7 s. Result attached to the \
         job result event referenced below."
    )
    .into_bytes();
    content.resize(200, b'.');
    let recipient = hex::encode(key(index + 1_000).verifying_key().to_bytes());
    let referenced = hex::encode([0xabu8; 32]);
    let tags = vec![
        Tag::new("t", ["summary"]),
        Tag::new("p", [recipient]),
        Tag::new("e", [referenced, "wss://relay.example/axon".to_owned(), "reply".to_owned()]),
    ];
    Event::sign(&key(index), 1_700_000_000 + index as u64, 1000, content, tags).expect("distinct tags")
}

fn bench_id(c: &mut Criterion) {
    let event = event(0);
    let mut group = c.benchmark_group("id");
    group.throughput(Throughput::Elements(1));
    group.bench_function("compute", |b| b.iter(|| black_box(&event).compute_id()));
    group.finish();
}

fn bench_verify(c: &mut Criterion) {
    let events: Vec<Event> = (0..BATCH).map(event).collect();
    let event = events[0].clone();
    let mut group = c.benchmark_group("verify");

    group.throughput(Throughput::Elements(1));
    group.bench_function("strict_single", |b| b.iter(|| black_box(&event).verify_signature()));

    // For reference only: batch verification is NOT the strict mode the protocol requires.
    // It checks one random linear combination of the 64 equations and neither rejects
    // small-order keys or R nor compares R byte for byte as verify_strict does, so the
    // relay must not use it to accept events. It shows what batching could at best save.
    // Like `strict_single`, each iteration parses the keys and signatures from the
    // events' bytes, so the per-event figures are comparable.
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_64", |b| {
        b.iter(|| {
            let events = black_box(&events);
            let messages: Vec<&[u8]> = events.iter().map(|event| &event.id[..]).collect();
            let signatures: Vec<Signature> = events.iter().map(|event| Signature::from_bytes(&event.sig)).collect();
            let keys: Vec<VerifyingKey> =
                events.iter().map(|event| VerifyingKey::from_bytes(&event.pubkey).expect("valid key")).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys)
        })
    });
    group.finish();
}

fn bench_frames(c: &mut Criterion) {
    let limits = Limits::default();
    let event = event(0);
    let raw = event.encode();
    let publish = Bytes::from(encode_publish_frame(&raw));
    let raw_event = RawEvent(Bytes::from(raw.clone()));

    // Sanity: the frame decodes and the event validates, so the benchmarks measure the
    // success path.
    match Frame::decode(&publish) {
        Ok(Frame::Publish { event: sent }) => {
            assert_eq!(decode_and_validate(sent.as_bytes(), &limits), Ok(event.clone()));
        }
        other => panic!("PUBLISH frame did not decode: {other:?}"),
    }

    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(1));

    group.bench_function("decode_publish", |b| {
        b.iter(|| match Frame::decode(black_box(&publish)) {
            Ok(Frame::Publish { event }) => event.decode(),
            _ => unreachable!("checked above"),
        })
    });

    group.bench_function("decode_validate_publish", |b| {
        b.iter(|| match Frame::decode(black_box(&publish)) {
            Ok(Frame::Publish { event }) => decode_and_validate(event.as_bytes(), &limits),
            _ => unreachable!("checked above"),
        })
    });

    group.bench_function("encode_event_around_raw", |b| {
        b.iter(|| encode_event_frame(black_box(SUB_ID), black_box(SEQ), black_box(raw_event.as_bytes())))
    });

    // For comparison: what fan-out would cost if it re-encoded the decoded event instead
    // of forwarding the bytes it received.
    group.bench_function("encode_event_reencode", |b| {
        b.iter(|| {
            Frame::Event(EventMessage {
                sub_id: SUB_ID.to_owned(),
                event: RawEvent::encode(black_box(&event)),
                seq: SEQ,
            })
            .encode()
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_id, bench_verify, bench_frames
}
criterion_main!(benches);
