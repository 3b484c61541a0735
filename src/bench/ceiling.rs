//! `ceiling`: the client side alone, in this process, no relay: how fast the harness can
//! sign, encode and decode+verify, so a reader can see it is not the bottleneck.

use std::time::Instant;

use bytes::Bytes;

use crate::clock::unix_now;
use crate::protocol::frame::{encode_event_frame, encode_publish_frame};
use crate::protocol::{Event, Frame, Limits};

use super::gen::{content, cores, pseudo_id, random_keys, sign_all, standard_tags, Draft};
use super::lean::raw_content;
use super::stats::{rate, thousands, Metrics, Report};
use super::CliResult;

/// The shape of a ceiling run.
#[derive(Debug, Clone)]
pub struct CeilingParams {
    /// Events per measurement.
    pub events: usize,
    /// Content size in bytes.
    pub content_bytes: usize,
}

/// The one-line summary of a ceiling run.
pub fn summarize(metrics: &Metrics) -> String {
    format!(
        "ceiling: {} events signed/s, {} frames encoded/s, {} frames decoded+verified/s per core \
         ({} threads: {} signed/s, {} decoded+verified/s; lean EVENT read {} /s per core)",
        thousands(metrics.get("signed_per_s")),
        thousands(metrics.get("encoded_per_s")),
        thousands(metrics.get("verified_per_s")),
        metrics.get("threads"),
        thousands(metrics.get("signed_per_s_all")),
        thousands(metrics.get("verified_per_s_all")),
        thousands(metrics.get("lean_read_per_s")),
    )
}

fn decode_and_verify(frame: &Bytes, limits: &Limits) -> CliResult<()> {
    match Frame::decode(frame)? {
        Frame::Publish { event } => {
            event.decode()?.validate(limits)?;
            Ok(())
        }
        _ => Err("not a PUBLISH frame".into()),
    }
}

/// One ceiling run.
pub fn run(params: &CeilingParams) -> CliResult<Report> {
    let count = params.events.max(1);
    let keys = random_keys(4);
    let now = unix_now();
    let pubkeys: Vec<[u8; 32]> = keys.iter().map(|key| key.verifying_key().to_bytes()).collect();
    let draft = |index: usize| Draft {
        key: index % keys.len(),
        created_at: now,
        kind: 1000,
        content: content(params.content_bytes, index as u64, now),
        tags: standard_tags("ceiling", &pubkeys[(index + 1) % pubkeys.len()], &pseudo_id("ceiling", index as u64)),
    };
    let drafts: Vec<Draft> = (0..count).map(draft).collect();

    // Sign on one thread.
    let started = Instant::now();
    let mut events = Vec::with_capacity(count);
    for Draft { key, created_at, kind, content, tags } in drafts {
        events.push(Event::sign(&keys[key], created_at, kind, content, tags)?);
    }
    let signed = rate(count as u64, started.elapsed());

    // Sign on every core.
    let threads = cores();
    let started = Instant::now();
    let all = sign_all(count, &keys, draft)?;
    let signed_all = rate(all.len() as u64, started.elapsed());
    drop(all);

    // Encode: the event map, then the PUBLISH frame around it.
    let started = Instant::now();
    let frames: Vec<Bytes> = events.iter().map(|event| Bytes::from(encode_publish_frame(&event.encode()))).collect();
    let encoded = rate(count as u64, started.elapsed());

    // Decode + strict validation (id + signature) on one thread, then on every core.
    let limits = Limits::default();
    let started = Instant::now();
    for frame in &frames {
        decode_and_verify(frame, &limits)?;
    }
    let verified = rate(count as u64, started.elapsed());
    let started = Instant::now();
    let chunk = count.div_ceil(threads).max(1);
    let results: Vec<CliResult<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = frames
            .chunks(chunk)
            .map(|part| {
                let limits = &limits;
                scope.spawn(move || part.iter().try_for_each(|frame| decode_and_verify(frame, limits)))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Err("a verifying thread panicked".into())))
            .collect()
    });
    results.into_iter().collect::<CliResult<Vec<()>>>()?;
    let verified_all = rate(count as u64, started.elapsed());

    // What a fan-out subscriber of the benchmark does per delivery: decode the EVENT frame
    // (event sliced, not decoded) and read the content's first bytes.
    let event_frames: Vec<Bytes> = events
        .iter()
        .enumerate()
        .map(|(index, event)| Bytes::from(encode_event_frame("f1", index as u64 + 1, &event.encode())))
        .collect();
    let started = Instant::now();
    let mut seen = 0u64;
    for frame in &event_frames {
        if let Frame::Event(message) = Frame::decode(frame)? {
            seen += raw_content(message.event.as_bytes()).map_or(0, |content| u64::from(content[0]));
        }
    }
    let lean = rate(count as u64, started.elapsed());
    // A full client-side decode of the same frames (what `Client` does per event).
    let started = Instant::now();
    for frame in &event_frames {
        if let Frame::Event(message) = Frame::decode(frame)? {
            seen += message.event.decode()?.kind as u64;
        }
    }
    let client_decode = rate(count as u64, started.elapsed());

    let mut metrics = Metrics::default();
    metrics.set("signed_per_s", signed);
    metrics.set("encoded_per_s", encoded);
    metrics.set("verified_per_s", verified);
    metrics.set("threads", threads as f64);
    metrics.set("signed_per_s_all", signed_all);
    metrics.set("verified_per_s_all", verified_all);
    metrics.set("lean_read_per_s", lean);
    metrics.set("client_decode_per_s", client_decode);
    let details = vec![
        format!(
            "{} events of {} content bytes with t/p/e tags; frame size {} bytes",
            thousands(count as f64),
            params.content_bytes,
            frames.first().map_or(0, Bytes::len)
        ),
        format!(
            "per core: sign {:.1} µs, encode {:.2} µs, decode+verify {:.1} µs, lean EVENT read {:.2} µs, full EVENT decode {:.2} µs",
            1e6 / signed,
            1e6 / encoded,
            1e6 / verified,
            1e6 / lean,
            1e6 / client_decode
        ),
        format!("(checksum {seen})"),
    ];
    Ok(Report { metrics, details, summarize })
}
