//! `ingest`: N pre-signed events over C connections, W publishes in flight per connection;
//! acknowledged events/s and OK latency.

use std::collections::BTreeMap;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::client::{Client, ClientError};
use crate::clock::unix_now;

use super::gen::{content, pseudo_id, run_nonce, sign_all, standard_tags, Draft, Prepared};
use super::stats::{figure, rate, thousands, Latency, Metrics, Report};
use super::{CliResult, Target};

/// The shape of an ingest run (shared with the Nostr side).
#[derive(Debug, Clone)]
pub struct IngestParams {
    /// Events in total.
    pub events: usize,
    /// Connections publishing concurrently.
    pub connections: usize,
    /// Publishes awaiting their OK per connection.
    pub in_flight: usize,
    /// Content size in bytes.
    pub content_bytes: usize,
    /// Send every event with an invalid signature (one bit of S flipped, so only the
    /// signature equation fails: the most expensive refusal). Measures the relay refusing.
    pub invalid_signatures: bool,
}

/// What one publishing connection saw.
#[derive(Debug, Default)]
pub struct ConnOutcome {
    /// OK latency of each acknowledged event (ns).
    pub latencies: Vec<u64>,
    /// Refusals by error code (or "closed").
    pub errors: BTreeMap<String, u64>,
    /// The highest seq acknowledged.
    pub max_seq: u64,
}

fn error_key(error: &ClientError) -> String {
    match error {
        ClientError::Rejected { code, .. } => code.to_string(),
        ClientError::Closed => "closed".into(),
        ClientError::Connect { .. } => "connect".into(),
        ClientError::Protocol(_) => "protocol".into(),
    }
}

/// Publishes `events` on `client`, keeping `in_flight` unanswered at most.
pub async fn pipeline(client: &Client, events: Vec<Prepared>, in_flight: usize) -> ConnOutcome {
    let mut outcome = ConnOutcome { latencies: Vec::with_capacity(events.len()), errors: BTreeMap::new(), max_seq: 0 };
    let mut queue = events.into_iter();
    let mut pending = FuturesUnordered::new();
    loop {
        while pending.len() < in_flight.max(1) {
            let Some(event) = queue.next() else { break };
            pending.push(async move {
                let started = Instant::now();
                let result = client.publish_raw(event.id, event.raw).await;
                (started.elapsed(), result)
            });
        }
        match pending.next().await {
            Some((elapsed, Ok(seq))) => {
                outcome.latencies.push(elapsed.as_nanos() as u64);
                outcome.max_seq = outcome.max_seq.max(seq.unwrap_or(0));
            }
            Some((_, Err(error))) => *outcome.errors.entry(error_key(&error)).or_default() += 1,
            None => break,
        }
    }
    outcome
}

/// The one-line summary of an ingest run (Axon or Nostr).
pub fn summarize(metrics: &Metrics) -> String {
    let refused = match metrics.get("refused") {
        0.0 => String::new(),
        refused => {
            format!(", {} answers/s with {} refused", thousands(metrics.get("answers_per_s")), thousands(refused))
        }
    };
    format!(
        "ingest: {} events/s acknowledged{refused}, OK latency p50 {} ms p99 {} ms ({} events, {} connections, {} in flight each)",
        thousands(metrics.get("events_per_s")),
        figure(metrics.get("ok_p50_ms")),
        figure(metrics.get("ok_p99_ms")),
        thousands(metrics.get("events")),
        metrics.get("connections"),
        metrics.get("in_flight"),
    )
}

/// Builds the report from per-connection outcomes.
pub fn report(params: &IngestParams, outcomes: Vec<ConnOutcome>, elapsed: std::time::Duration) -> Report {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples = Vec::with_capacity(params.events);
    for outcome in outcomes {
        samples.extend(outcome.latencies);
        for (code, count) in outcome.errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let acknowledged = samples.len() as u64;
    let refused = errors.values().sum::<u64>();
    let latency = Latency::of(samples);
    let mut metrics = Metrics::default();
    metrics.set("events_per_s", rate(acknowledged, elapsed));
    metrics.set("answers_per_s", rate(acknowledged + refused, elapsed));
    metrics.set_latency(["ok_p50_ms", "ok_p99_ms", "ok_max_ms"], &latency);
    metrics.set("events", params.events as f64);
    metrics.set("connections", params.connections as f64);
    metrics.set("in_flight", params.in_flight as f64);
    metrics.set("acknowledged", acknowledged as f64);
    metrics.set("refused", refused as f64);
    metrics.set("seconds", elapsed.as_secs_f64());
    let mut details = vec![
        format!(
            "{} acknowledged in {:.2} s; OK latency {}",
            thousands(acknowledged as f64),
            elapsed.as_secs_f64(),
            latency.describe()
        ),
        format!(
            "content {} bytes, tags t/p/e, events pre-signed before timing{}",
            params.content_bytes,
            if params.invalid_signatures { "; every signature invalid (S bit flipped)" } else { "" }
        ),
    ];
    if !errors.is_empty() {
        details.push(format!("refused or failed, by code: {errors:?}"));
    }
    Report { metrics, details, summarize }
}

/// One ingest run against the Axon target.
pub async fn run(target: &Target, params: &IngestParams) -> CliResult<Report> {
    let connections = params.connections.max(1);
    let keys = target.keys(connections);
    let nonce = run_nonce();
    let topic = format!("ingest-{nonce}");
    let now = unix_now();
    let pubkeys: Vec<[u8; 32]> = keys.iter().map(|key| key.verifying_key().to_bytes()).collect();
    let events = tokio::task::block_in_place(|| {
        let mut events = sign_all(params.events, &keys, |index| Draft {
            key: index % connections,
            created_at: now,
            kind: 1000,
            content: content(params.content_bytes, index as u64, now),
            tags: standard_tags(&topic, &pubkeys[(index + 1) % connections], &pseudo_id(&nonce, index as u64)),
        })?;
        if params.invalid_signatures {
            for event in &mut events {
                event.sig[40] ^= 1; // in S, which stays below ℓ: only the equation fails
            }
        }
        CliResult::Ok(events.iter().map(Prepared::of).collect::<Vec<_>>())
    })?;
    let mut per_connection: Vec<Vec<Prepared>> =
        (0..connections).map(|_| Vec::with_capacity(params.events / connections + 1)).collect();
    for (index, event) in events.into_iter().enumerate() {
        per_connection[index % connections].push(event);
    }

    let relay = target.start(&keys, &[]).await?;
    let mut clients = Vec::with_capacity(connections);
    for key in &keys {
        clients.push(Client::connect(&relay.url, &relay.relay_url, key).await?);
    }
    let cpu_start = relay.cpu();
    let started = Instant::now();
    let in_flight = params.in_flight;
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(per_connection)
        .map(|(client, events)| tokio::spawn(async move { pipeline(&client, events, in_flight).await }))
        .collect();
    let outcomes = super::join_tasks(tasks, "a publishing task").await?;
    let elapsed = started.elapsed();
    let cpu_end = relay.cpu();
    let mut report = report(params, outcomes, elapsed);
    cpu_end.report_since(&cpu_start, &mut report);
    relay.report_peak_rss(&mut report);
    relay.stop().await?;
    Ok(report)
}
