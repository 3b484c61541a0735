//! Benchmarks of the protocol hot paths: id computation, signature verification (spec §3's
//! rule singly and in batches, and the worst case an attacker can force),
//! and the frame decode/encode work the relay does for every published or delivered event.
//!
//! Every benchmark works on one realistic event: kind 1000, 200 bytes of content, and
//! three tags (`t`, `p`, `e`). Run with `cargo bench --bench protocol`.

use std::hint::black_box;
use std::time::Duration;

use axon_relay::protocol::event::decode_and_validate;
use axon_relay::protocol::frame::{encode_event_frame, encode_publish_frame, EventMessage};
use axon_relay::protocol::signature::{self, BatchVerifier, PreparedSigned, VerificationKey};
use axon_relay::protocol::{Event, Frame, Limits, RawEvent, Tag};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// Events verified together by `verify/batch_64*` (the most one combination covers).
const BATCH: usize = signature::MAX_BATCH;
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
    event_by(index, index)
}

/// [`event`] signed by `key(author)`.
fn event_by(index: usize, author: usize) -> Event {
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
    Event::sign(&key(author), 1_700_000_000 + index as u64, 1000, content, tags).expect("distinct tags")
}

fn bench_id(c: &mut Criterion) {
    let event = event(0);
    let mut group = c.benchmark_group("id");
    group.throughput(Throughput::Elements(1));
    group.bench_function("compute", |b| b.iter(|| black_box(&event).compute_id()));
    group.finish();
}

/// Each event's key, decoded once, as the relay's per-author cache does.
fn decoded_keys(events: &[Event]) -> Vec<VerificationKey> {
    events.iter().map(|event| VerificationKey::from_bytes(&event.pubkey).expect("valid key")).collect()
}

/// The events as items for the batch verifier.
fn prepared<'a>(events: &'a [Event], keys: &'a [VerificationKey]) -> Vec<PreparedSigned<'a>> {
    events
        .iter()
        .zip(keys)
        .map(|(event, key)| PreparedSigned { key, message: &event.id, signature: &event.sig })
        .collect()
}

fn bench_verify(c: &mut Criterion) {
    let events: Vec<Event> = (0..BATCH).map(event).collect();
    let event = events[0].clone();
    // Keys decoded once, as the relay's per-author cache does.
    let keys = decoded_keys(&events);
    let good = prepared(&events, &keys);
    // Bad signatures with valid encodings (canonical S, R and A, neither small-order): each
    // carries the next event's signature, so only the equation fails. This is the attacker's
    // cheapest way to make verification work hardest.
    let bad: Vec<PreparedSigned> = good
        .iter()
        .enumerate()
        .map(|(index, item)| PreparedSigned { signature: &events[(index + 1) % BATCH].sig, ..*item })
        .collect();
    let mut one_bad = good.clone();
    one_bad[BATCH - 1] = bad[BATCH - 1];
    for item in &bad {
        assert!(signature::verify_prepared(item.key, item.message, item.signature).is_err());
    }
    assert!(signature::verify_batch_prepared(&good).iter().all(Result::is_ok));
    assert_eq!(signature::verify_batch_prepared(&one_bad).iter().filter(|verdict| verdict.is_err()).count(), 1);

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    // Spec §3's rule one signature at a time, decoding the key each time (Event::verify_signature).
    group.bench_function("single", |b| b.iter(|| black_box(&event).verify_signature()));
    // The same with the key from the cache: the baseline for the batch figures below.
    group.bench_function("single_cached_key", |b| {
        b.iter(|| {
            let item = black_box(&good[0]);
            signature::verify_prepared(item.key, item.message, item.signature)
        })
    });
    group.bench_function("single_cached_key_bad", |b| {
        b.iter(|| {
            let item = black_box(&bad[0]);
            signature::verify_prepared(item.key, item.message, item.signature)
        })
    });
    // For reference: ed25519-dalek's cofactorless verify_strict, the rule before the amendment.
    group.bench_function("dalek_verify_strict", |b| {
        b.iter(|| {
            let event = black_box(&event);
            VerifyingKey::from_bytes(&event.pubkey)
                .expect("valid key")
                .verify_strict(&event.id, &Signature::from_bytes(&event.sig))
        })
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    // 64 valid signatures by 64 authors: one random linear combination of 64 (no probe on a
    // fresh verifier).
    group.bench_function("batch_64", |b| b.iter(|| signature::verify_batch_prepared(black_box(&good))));
    // 64 bad signatures, fresh verifier: the combination fails, then 64 single checks.
    group.bench_function("batch_64_all_bad", |b| b.iter(|| signature::verify_batch_prepared(black_box(&bad))));
    // One bad signature, last: the combination fails, 64 single checks follow. The worst
    // case for one call of a fresh verifier.
    group.bench_function("batch_64_one_bad", |b| b.iter(|| signature::verify_batch_prepared(black_box(&one_bad))));
    // The same stream through one BatchVerifier, as a relay keeps it: after a failed
    // combination it backs off to single checks, so a bad signature in every 64 costs
    // about what single verification costs.
    let mut verifier = BatchVerifier::new();
    group.bench_function("batch_64_one_bad_stream", |b| b.iter(|| verifier.verify(black_box(&one_bad))));
    let mut verifier = BatchVerifier::new();
    group.bench_function("batch_64_all_bad_stream", |b| b.iter(|| verifier.verify(black_box(&bad))));
    group.finish();
}

/// Per-event cost ratios against single verification, measured interleaved: every round
/// times each variant once over the same 64 events, so load from other processes on a
/// shared machine hits all variants alike. Prints the median ratio of each over the rounds.
fn report_verify_ratios(_: &mut Criterion) {
    const ROUNDS: usize = 41;
    let events: Vec<Event> = (0..BATCH).map(event).collect();
    let keys = decoded_keys(&events);
    let good = prepared(&events, &keys);
    let bad: Vec<PreparedSigned> = good
        .iter()
        .enumerate()
        .map(|(index, item)| PreparedSigned { signature: &events[(index + 1) % BATCH].sig, ..*item })
        .collect();
    let mut one_bad = good.clone();
    one_bad[BATCH - 1] = bad[BATCH - 1];
    // A relay's bursts: 64 events from 4 connections, one author each.
    let four_events: Vec<Event> = (0..BATCH).map(|index| event_by(index, index % 4)).collect();
    let four_keys = decoded_keys(&four_events);
    let four_authors = prepared(&four_events, &four_keys);
    let time = |work: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        work();
        start.elapsed().as_secs_f64()
    };
    let singles = |items: &[PreparedSigned]| {
        for item in items {
            let _ = black_box(signature::verify_prepared(item.key, item.message, item.signature));
        }
    };
    let mut one_bad_stream = BatchVerifier::new();
    let mut all_bad_stream = BatchVerifier::new();
    let names = [
        "batch_64",
        "batch_64_4_authors",
        "batch_64_all_bad",
        "batch_64_one_bad",
        "batch_64_one_bad_stream",
        "batch_64_all_bad_stream",
    ];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut single_us = Vec::new();
    for _ in 0..ROUNDS {
        let single = time(&mut || singles(black_box(&good)));
        single_us.push(single * 1e6 / BATCH as f64);
        let runs = [
            time(&mut || drop(black_box(signature::verify_batch_prepared(black_box(&good))))),
            time(&mut || drop(black_box(signature::verify_batch_prepared(black_box(&four_authors))))),
            time(&mut || drop(black_box(signature::verify_batch_prepared(black_box(&bad))))),
            time(&mut || drop(black_box(signature::verify_batch_prepared(black_box(&one_bad))))),
            time(&mut || drop(black_box(one_bad_stream.verify(black_box(&one_bad))))),
            time(&mut || drop(black_box(all_bad_stream.verify(black_box(&bad))))),
        ];
        for (list, run) in ratios.iter_mut().zip(runs) {
            list.push(run / single);
        }
    }
    let median = |list: &mut Vec<f64>| {
        list.sort_by(f64::total_cmp);
        list[list.len() / 2]
    };
    println!("verify ratios, per event against single verification with a cached key (median of {ROUNDS} interleaved rounds; single = {:.1} µs median):", median(&mut single_us));
    for (name, list) in names.iter().zip(ratios.iter_mut()) {
        println!("  {name:<26} {:.3}x", median(list));
    }
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
    targets = bench_id, report_verify_ratios, bench_verify, bench_frames
}
criterion_main!(benches);
