//! The scenarios against a Nostr relay: ingest, fan-out and the query session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use crate::clock::unix_now;

use super::client::{Incoming, NostrClient, NostrLean};
use super::event::*;
use crate::bench::fanout::{
    await_deliveries, on_own_thread, scheduled_publisher, FanoutParams, PubOutcome, Shared, SubOutcome,
};
use crate::bench::gen::{pseudo_id, run_nonce};
use crate::bench::ingest::{ConnOutcome, IngestParams};
use crate::bench::query::{QueryKind, QueryParams, Series, KINDS, TOPICS};
use crate::bench::stats::{Latency, Metrics, Report};
use crate::cli::CliResult;

/// How long a Nostr query may take to reach EOSE before it is counted as dropped.
const NOSTR_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

fn error_key(reason: &str) -> String {
    reason.split(':').next().unwrap_or(reason).trim().to_owned()
}

async fn pipeline(client: &NostrClient, events: Vec<NostrPrepared>, in_flight: usize) -> ConnOutcome {
    let mut outcome = ConnOutcome { latencies: Vec::with_capacity(events.len()), ..ConnOutcome::default() };
    let mut queue = events.into_iter();
    let mut pending = FuturesUnordered::new();
    loop {
        while pending.len() < in_flight.max(1) {
            let Some(event) = queue.next() else { break };
            pending.push(async move {
                let started = Instant::now();
                let result = client.publish(&event).await;
                (started.elapsed(), result)
            });
        }
        match pending.next().await {
            Some((elapsed, Ok(()))) => outcome.latencies.push(elapsed.as_nanos() as u64),
            Some((_, Err(reason))) => *outcome.errors.entry(error_key(&reason)).or_default() += 1,
            None => break,
        }
    }
    outcome
}

/// One ingest run against a Nostr relay.
pub async fn ingest(url: &str, params: &IngestParams) -> CliResult<Report> {
    let connections = params.connections.max(1);
    let keys: Vec<NostrKey> = (0..connections).map(|_| NostrKey::random()).collect();
    let nonce = run_nonce();
    let topic = format!("ingest-{nonce}");
    let now = unix_now();
    let events = tokio::task::block_in_place(|| {
        prepare_all(params.events, &keys, |index| NostrDraft {
            key: index % connections,
            created_at: now,
            kind: 1000,
            content: content(params.content_bytes, index as u64, now),
            tags: tags(&topic, &keys[(index + 1) % connections].pubkey, &pseudo_id(&nonce, index as u64)),
        })
    })?;
    let mut parts: Vec<Vec<NostrPrepared>> = (0..connections).map(|_| Vec::new()).collect();
    for (index, event) in events.into_iter().enumerate() {
        parts[index % connections].push(event);
    }
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(NostrClient::connect(url).await?);
    }
    let started = Instant::now();
    let in_flight = params.in_flight;
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(parts)
        .map(|(client, events)| tokio::spawn(async move { pipeline(&client, events, in_flight).await }))
        .collect();
    let outcomes = crate::bench::join_tasks(tasks, "a publishing task").await?;
    let mut report = crate::bench::ingest::report(params, outcomes, started.elapsed());
    report.details.push("NIP-01 JSON, BIP-340 signatures, no AUTH".into());
    Ok(report)
}

async fn subscriber(
    mut conn: NostrLean,
    sub_ids: Vec<String>,
    filter: serde_json::Value,
    shared: Arc<Shared>,
    ready: oneshot::Sender<CliResult<()>>,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    let mut outcome = SubOutcome::default();
    let setup = async {
        for sub_id in &sub_ids {
            conn.send(serde_json::to_string(&("REQ", sub_id, &filter))?).await?;
        }
        let mut eose = 0;
        while eose < sub_ids.len() {
            match conn.next().await? {
                Some(Incoming::Eose(_)) => eose += 1,
                Some(Incoming::Closed(sub_id, reason)) => {
                    return Err(format!("REQ {sub_id} closed by the relay: {reason}").into())
                }
                Some(_) => {}
                None => return Err("connection closed during REQ".into()),
            }
        }
        CliResult::Ok(())
    };
    let result = setup.await;
    let failed = result.is_err();
    let _ = ready.send(result);
    if failed {
        return outcome;
    }
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.changed() => break,
            message = conn.next() => message,
        };
        match message {
            Ok(Some(Incoming::Event(index))) => {
                if let Some(latency) = shared.delivered_index(index) {
                    outcome.latencies.push(latency);
                }
                outcome.deliveries += 1;
                outcome.last_delivery = shared.now_ns();
            }
            Ok(Some(Incoming::Closed(_, reason))) => {
                outcome.overflows += 1;
                outcome.errors.push(format!("CLOSED: {reason}"));
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(error) => {
                outcome.errors.push(error.to_string());
                break;
            }
        }
    }
    conn.close().await;
    outcome
}

async fn publisher(
    client: Arc<NostrClient>,
    events: Vec<(usize, u64, NostrPrepared)>,
    shared: Arc<Shared>,
    start_ns: u64,
) -> PubOutcome {
    scheduled_publisher(events, shared, start_ns, move |event: NostrPrepared| {
        let client = client.clone();
        async move { client.publish(&event).await }
    })
    .await
}

/// One fan-out run against a Nostr relay.
pub async fn fanout(url: &str, params: &FanoutParams) -> CliResult<Report> {
    let publishers = params.publishers.max(1);
    let keys: Vec<NostrKey> = (0..publishers + 1).map(|_| NostrKey::random()).collect();
    let nonce = run_nonce();
    let topic = format!("fanout-{nonce}");
    let now = unix_now();
    let total = params.total_events();
    let events = tokio::task::block_in_place(|| {
        prepare_all(total, &keys, |index| NostrDraft {
            key: index % publishers,
            created_at: now,
            kind: 1000,
            content: content(params.content_bytes.max(32), index as u64, params.offset_ns(index)),
            tags: tags(&topic, &keys[publishers].pubkey, &pseudo_id(&nonce, index as u64)),
        })
    })?;
    let mut per_publisher: Vec<Vec<(usize, u64, NostrPrepared)>> = (0..publishers).map(|_| Vec::new()).collect();
    for (index, event) in events.into_iter().enumerate() {
        per_publisher[index % publishers].push((index, params.offset_ns(index), event));
    }
    let shared = Arc::new(Shared::new(total));
    // The topic is new, so nothing stored matches: the subscriptions are live only.
    let filter = serde_json::json!({"kinds": [1000], "#t": [topic]});
    let (stop, stopped) = watch::channel(false);
    let mut subscriber_tasks = Vec::new();
    let mut readiness = Vec::new();
    let mut next_sub = 0;
    for count in params.split() {
        let conn = NostrLean::connect(url).await?;
        let sub_ids: Vec<String> = (next_sub..next_sub + count).map(|n| format!("f{n}")).collect();
        next_sub += count;
        let (ready, is_ready) = oneshot::channel();
        readiness.push(is_ready);
        subscriber_tasks.push(tokio::spawn(subscriber(
            conn,
            sub_ids,
            filter.clone(),
            shared.clone(),
            ready,
            stopped.clone(),
        )));
    }
    for is_ready in readiness {
        is_ready
            .await
            .map_err(|_| "a subscriber stopped during setup")?
            .map_err(|error| format!("subscriber setup failed: {error}"))?;
    }
    let (url, publishing) = (url.to_owned(), shared.clone());
    let pubs = on_own_thread(move || async move {
        let mut clients = Vec::with_capacity(publishers);
        for _ in 0..publishers {
            clients.push(Arc::new(NostrClient::connect(&url).await?));
        }
        let start_ns = publishing.now_ns() + 100_000_000;
        let runs = clients
            .into_iter()
            .zip(per_publisher)
            .map(|(client, events)| publisher(client, events, publishing.clone(), start_ns));
        Ok(futures_util::future::join_all(runs).await)
    })
    .await?;
    await_deliveries(&shared, total as u64 * params.subscribers as u64, Duration::from_secs(3)).await;
    let _ = stop.send(true);
    let subs = crate::bench::join_tasks(subscriber_tasks, "a subscriber").await?;
    let mut report = crate::bench::fanout::report(params, &shared, subs, pubs);
    report.details.push("NIP-01 JSON; overflows = subscriptions the relay CLOSED".into());
    Ok(report)
}

/// A prefilled Nostr relay and what it holds.
pub struct NostrQuerySession {
    url: String,
    authors: Vec<String>,
    topics: Vec<String>,
    ids: Vec<String>,
}

/// Publishes the prefill (not timed) over 4 pipelined connections.
pub async fn prepare_query(url: &str, params: &QueryParams) -> CliResult<NostrQuerySession> {
    let keys: Vec<NostrKey> = (0..crate::bench::query::AUTHORS).map(|_| NostrKey::random()).collect();
    let prefix = format!("q-{}", run_nonce());
    let started = Instant::now();
    let clients = [
        NostrClient::connect(url).await?,
        NostrClient::connect(url).await?,
        NostrClient::connect(url).await?,
        NostrClient::connect(url).await?,
    ];
    let clients: Vec<Arc<NostrClient>> = clients.into_iter().map(Arc::new).collect();
    let mut ids = Vec::new();
    let mut start = 0;
    let prefill = params.prefill;
    let now = unix_now();
    while start < prefill {
        let end = (start + 50_000).min(prefill);
        let events = tokio::task::block_in_place(|| {
            prepare_all(end - start, &keys, |offset| {
                let index = start + offset;
                NostrDraft {
                    key: index % keys.len(),
                    created_at: now.saturating_sub((prefill - index) as u64),
                    kind: KINDS[(index / keys.len()) % KINDS.len()],
                    content: content(params.content_bytes.max(32), index as u64, now),
                    tags: tags(
                        &format!("{prefix}-{}", index % TOPICS),
                        &keys[(index + 1) % keys.len()].pubkey,
                        &pseudo_id(&prefix, index as u64),
                    ),
                }
            })
        })?;
        for (offset, event) in events.iter().enumerate() {
            if (start + offset).is_multiple_of(97) {
                ids.push(event.id.clone());
            }
        }
        let mut parts: Vec<Vec<NostrPrepared>> = clients.iter().map(|_| Vec::new()).collect();
        for (index, event) in events.into_iter().enumerate() {
            parts[index % clients.len()].push(event);
        }
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .zip(parts)
            .map(|(client, part)| tokio::spawn(async move { pipeline(&client, part, 256).await }))
            .collect();
        for outcome in crate::bench::join_tasks(tasks, "a prefill task").await? {
            if !outcome.errors.is_empty() {
                return Err(format!("the Nostr relay refused prefill events: {:?}", outcome.errors).into());
            }
        }
        start = end;
    }
    println!(
        "nostr: prefilled {} events in {:.1} s (published, not timed)",
        crate::bench::stats::thousands(prefill as f64),
        started.elapsed().as_secs_f64()
    );
    Ok(NostrQuerySession {
        url: url.to_owned(),
        authors: keys.iter().map(|key| key.pubkey.clone()).collect(),
        topics: (0..TOPICS).map(|topic| format!("{prefix}-{topic}")).collect(),
        ids,
    })
}

impl NostrQuerySession {
    fn filter(&self, kind: QueryKind, params: &QueryParams, n: usize) -> Option<serde_json::Value> {
        let authors = self.authors.len().max(1);
        match kind {
            QueryKind::AuthorKind => Some(serde_json::json!({
                "authors": [self.authors[n % authors]],
                "kinds": [KINDS[(n / authors) % KINDS.len()]],
                "limit": params.limit,
            })),
            QueryKind::Tag => Some(serde_json::json!({
                "#t": [self.topics[(n * 7) % self.topics.len()]],
                "limit": params.limit,
            })),
            QueryKind::Ids => Some(serde_json::json!({"ids": [self.ids[(n * 7919) % self.ids.len().max(1)]]})),
            QueryKind::Replay => None,
        }
    }

    async fn series(
        &self,
        conn: &mut NostrLean,
        kind: QueryKind,
        params: &QueryParams,
        worker: usize,
    ) -> CliResult<Series> {
        let mut series = Series::default();
        let mut latencies = Vec::new();
        let (mut low, mut high) = (usize::MAX, 0);
        for n in 0..5 + params.queries {
            let Some(filter) = self.filter(kind, params, n + worker * 1009) else {
                return Ok(series);
            };
            let sub_id = format!("q{n}");
            let started = Instant::now();
            conn.send(serde_json::to_string(&("REQ", &sub_id, filter))?).await?;
            let mut events = 0;
            let answered = tokio::time::timeout(NOSTR_QUERY_TIMEOUT, async {
                loop {
                    match conn.next().await? {
                        Some(Incoming::Event(_)) => events += 1,
                        Some(Incoming::Eose(done)) if done == sub_id => return CliResult::Ok(()),
                        Some(Incoming::Closed(done, reason)) if done == sub_id => {
                            return Err(format!("query closed by the relay: {reason}").into())
                        }
                        Some(Incoming::Notice(notice)) => return Err(format!("relay NOTICE: {notice}").into()),
                        Some(_) => {}
                        None => return Err("connection closed during a query".into()),
                    }
                }
            })
            .await;
            let elapsed = started.elapsed().as_nanos() as u64;
            conn.send(serde_json::to_string(&("CLOSE", &sub_id))?).await?;
            match answered {
                Ok(result) => result?,
                Err(_) => {
                    // nostr-rs-relay occasionally never answers a REQ with EOSE: count it.
                    series.dropped += 1;
                    continue;
                }
            }
            if n >= 5 {
                latencies.push(elapsed);
                low = low.min(events);
                high = high.max(events);
            }
        }
        series.latencies = latencies;
        series.events = (low, high);
        Ok(series)
    }

    /// One measured run (the replay query has no Nostr equivalent and is skipped).
    pub async fn run(&self, params: &QueryParams) -> CliResult<Report> {
        let mut report =
            Report { metrics: Metrics::default(), details: Vec::new(), summarize: crate::bench::query::summarize };
        report.metrics.set("prefill", params.prefill as f64);
        report.metrics.set("connections", params.connections as f64);
        for kind in [QueryKind::AuthorKind, QueryKind::Tag, QueryKind::Ids] {
            let mut conn = NostrLean::connect(&self.url).await?;
            let sequential = self.series(&mut conn, kind, params, 0).await?;
            conn.close().await;
            let mut conns = Vec::new();
            for _ in 0..params.connections.max(1) {
                conns.push(NostrLean::connect(&self.url).await?);
            }
            let started = Instant::now();
            let results = futures_util::future::join_all(
                conns.iter_mut().enumerate().map(|(worker, conn)| self.series(conn, kind, params, worker + 1)),
            )
            .await;
            let elapsed = started.elapsed();
            let mut samples = Vec::new();
            let mut dropped = sequential.dropped;
            for result in results {
                let series = result?;
                dropped += series.dropped;
                samples.extend(series.latencies);
            }
            if dropped > 0 {
                report.details.push(format!(
                    "{}: {dropped} queries got no EOSE within {} s (not counted in latency or q/s)",
                    kind.name(),
                    NOSTR_QUERY_TIMEOUT.as_secs()
                ));
                let total_dropped = report.metrics.get("dropped_queries") + dropped as f64;
                report.metrics.set("dropped_queries", total_dropped);
            }
            let total = samples.len() as u64 + (5 * conns.len()) as u64;
            crate::bench::query::add_kind(&mut report, kind, sequential, (total, elapsed, Latency::of(samples)));
            for conn in conns {
                conn.close().await;
            }
        }
        report.details.push("replay: no after_seq in NIP-01; not measured".into());
        Ok(report)
    }
}
