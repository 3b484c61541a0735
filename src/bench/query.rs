//! `query`: stored-query latency and queries/s on a database pre-filled with M events:
//! author+kind (limit 500), a tag filter (limit 500), an ids lookup, and an `after_seq`
//! replay of 10,000 events (time to EOSE).
//!
//! With `--spawn` the prefill is written straight into the database with the library's
//! store (not timed, no relay involved), then the relay is started on it; against `--url`
//! it is published over pipelined connections before timing starts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::client::Client;
use crate::clock::unix_now;
use crate::protocol::frame::Subscribe;
use crate::protocol::{Event, EventId, Filter, Frame, TagFilter};
use crate::relay::store::{Accepted, BatchStats, CommitHook, Committed, Store};

use super::gen::{content, pseudo_id, run_nonce, sign_all, standard_tags, Draft, Prepared};
use super::lean::LeanConn;
use super::stats::{figure, rate, thousands, Latency, Metrics, Report};
use super::{CliResult, Running, Target};

/// Events signed and stored per prefill chunk (bounds memory at 1,000,000 events).
const CHUNK: usize = 50_000;
/// Store inserts in flight during the prefill.
const PREFILL_IN_FLIGHT: usize = 8192;
/// Kinds the prefill spreads events over.
pub const KINDS: [u16; 4] = [1000, 1001, 1002, 1003];
/// Distinct `t` topics in the prefill.
pub const TOPICS: usize = 100;
/// Authors in the prefill when spawning (one, the given key, against `--url`).
pub const AUTHORS: usize = 16;
/// How long a query may take to reach EOSE before the run fails (instead of hanging).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Queries run unmeasured before each measured series.
const WARMUP: usize = 5;

/// The shape of a query run (shared with the Nostr side).
#[derive(Debug, Clone)]
pub struct QueryParams {
    /// Events stored before measuring.
    pub prefill: usize,
    /// Measured queries per kind of query and per connection.
    pub queries: usize,
    /// Measured replays per connection.
    pub replays: usize,
    /// Events each replay returns.
    pub replay_events: usize,
    /// Connections querying concurrently in the throughput phase.
    pub connections: usize,
    /// Content size of prefilled events.
    pub content_bytes: usize,
    /// `limit` of the author+kind and tag queries.
    pub limit: u64,
}

/// What the prefill holds, so queries can target it.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Authors' public keys.
    pub authors: Vec<[u8; 32]>,
    /// `t` values.
    pub topics: Vec<String>,
    /// A sample of stored ids.
    pub ids: Vec<EventId>,
    /// Events stored.
    pub count: usize,
    /// The highest seq after the prefill.
    pub last_seq: u64,
}

/// The draft of prefill event `index` (shared with the Nostr side).
pub fn prefill_draft(index: usize, prefill: usize, authors: &[[u8; 32]], prefix: &str, params: &QueryParams) -> Draft {
    let author_count = authors.len().max(1);
    let now = unix_now();
    Draft {
        key: index % author_count,
        created_at: now.saturating_sub((prefill - index) as u64),
        kind: KINDS[(index / author_count) % KINDS.len()],
        content: content(params.content_bytes, index as u64, now),
        tags: standard_tags(
            &format!("{prefix}-{}", index % TOPICS),
            &authors[(index + 1) % author_count],
            &pseudo_id(prefix, index as u64),
        ),
    }
}

/// The n-th filter of each kind of query.
pub fn author_kind_filter(dataset: &Dataset, n: usize, limit: u64) -> Filter {
    let authors = dataset.authors.len().max(1);
    Filter {
        authors: Some(vec![dataset.authors[n % authors].to_vec()]),
        kinds: Some(vec![KINDS[(n / authors) % KINDS.len()]]),
        limit: Some(limit),
        ..Filter::default()
    }
}

/// A tag filter on one `t` topic.
pub fn tag_filter(dataset: &Dataset, n: usize, limit: u64) -> Filter {
    Filter {
        tags: Some(vec![TagFilter {
            name: "t".into(),
            values: vec![dataset.topics[(n * 7) % dataset.topics.len()].clone()],
        }]),
        limit: Some(limit),
        ..Filter::default()
    }
}

/// A lookup of one full id.
pub fn ids_filter(dataset: &Dataset, n: usize) -> Filter {
    let id = dataset.ids[(n * 7919) % dataset.ids.len().max(1)];
    Filter { ids: Some(vec![id.to_vec()]), ..Filter::default() }
}

struct NoHook;

impl CommitHook for NoHook {
    fn committed(&mut self, _events: &[Committed], _stats: BatchStats) {}
}

fn sample_ids(ids: &mut Vec<EventId>, start: usize, chunk: &[EventId]) {
    // Keeps every 97th id (and at least one), enough for varied lookups.
    for (offset, id) in chunk.iter().enumerate() {
        if (start + offset).is_multiple_of(97) || ids.is_empty() {
            ids.push(*id);
        }
    }
}

/// Signs the prefill and writes it straight into the database at `db`.
async fn prefill_store(
    db: &Path,
    keys: &[SigningKey],
    dataset: &mut Dataset,
    params: &QueryParams,
    prefix: &str,
) -> CliResult<()> {
    let store =
        Store::open_sqlite(db, Box::new(NoHook)).map_err(|error| format!("cannot open {}: {error}", db.display()))?;
    let mut start = 0;
    while start < params.prefill {
        let end = (start + CHUNK).min(params.prefill);
        let events = sign_chunk(start..end, keys, dataset, params, prefix)?;
        let mut pending = FuturesUnordered::new();
        for event in events {
            let raw = Bytes::from(event.encode());
            pending.push(store.insert(Arc::new(Accepted { event, raw, expires_at: None })));
            if pending.len() >= PREFILL_IN_FLIGHT {
                if let Some(result) = pending.next().await {
                    dataset.last_seq = dataset.last_seq.max(result?);
                }
            }
        }
        while let Some(result) = pending.next().await {
            dataset.last_seq = dataset.last_seq.max(result?);
        }
        start = end;
    }
    Ok(())
}

/// Signs prefill events `range` (on every core) and samples their ids for the id lookups.
fn sign_chunk(
    range: std::ops::Range<usize>,
    keys: &[SigningKey],
    dataset: &mut Dataset,
    params: &QueryParams,
    prefix: &str,
) -> CliResult<Vec<Event>> {
    let events = tokio::task::block_in_place(|| {
        sign_all(range.len(), keys, |offset| {
            prefill_draft(range.start + offset, params.prefill, &dataset.authors, prefix, params)
        })
    })?;
    let chunk_ids: Vec<EventId> = events.iter().map(|event| event.id).collect();
    sample_ids(&mut dataset.ids, range.start, &chunk_ids);
    Ok(events)
}

/// Publishes the prefill over pipelined connections (for `--url`).
async fn prefill_publish(
    relay: &Running,
    keys: &[SigningKey],
    dataset: &mut Dataset,
    params: &QueryParams,
    prefix: &str,
) -> CliResult<()> {
    let client_key = keys.first().ok_or("no key")?;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Arc::new(Client::connect(&relay.url, &relay.relay_url, client_key).await?));
    }
    let mut start = 0;
    while start < params.prefill {
        let end = (start + CHUNK).min(params.prefill);
        let events = sign_chunk(start..end, keys, dataset, params, prefix)?;
        let mut parts: Vec<Vec<Prepared>> = clients.iter().map(|_| Vec::new()).collect();
        for (index, event) in events.iter().enumerate() {
            parts[index % clients.len()].push(Prepared::of(event));
        }
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .zip(parts)
            .map(|(client, part)| tokio::spawn(async move { super::ingest::pipeline(&client, part, 256).await }))
            .collect();
        for outcome in super::join_tasks(tasks, "a prefill task").await? {
            if !outcome.errors.is_empty() {
                return Err(format!("the relay refused prefill events: {:?}", outcome.errors).into());
            }
            dataset.last_seq = dataset.last_seq.max(outcome.max_seq);
        }
        start = end;
    }
    Ok(())
}

/// A prefilled relay, kept across runs.
pub struct QuerySession {
    relay: Running,
    dataset: Dataset,
    key: SigningKey,
}

/// Prefills (not timed) and starts the relay.
pub async fn prepare(target: &Target, params: &QueryParams) -> CliResult<QuerySession> {
    let author_count = if matches!(target, Target::Spawn(_)) { AUTHORS } else { 1 };
    let keys = target.keys(author_count + 1);
    let authors: Vec<SigningKey> = keys[..author_count].to_vec();
    let reader = keys[author_count].clone();
    let prefix = format!("q-{}", run_nonce());
    let mut dataset = Dataset {
        authors: authors.iter().map(|key| key.verifying_key().to_bytes()).collect(),
        topics: (0..TOPICS).map(|topic| format!("{prefix}-{topic}")).collect(),
        ids: Vec::new(),
        count: params.prefill,
        last_seq: 0,
    };
    let started = Instant::now();
    let relay = match target.scratch()? {
        Some(dir) => {
            prefill_store(&dir.db_path(), &authors, &mut dataset, params, &prefix).await?;
            target.start_in(dir, &keys, &[("max_connections", params.connections as u64 + 100)]).await?
        }
        None => {
            let relay = target.start(&keys, &[]).await?;
            prefill_publish(&relay, &authors, &mut dataset, params, &prefix).await?;
            relay
        }
    };
    println!(
        "prefilled {} events ({} author(s), {} kinds, {} topics) in {:.1} s (not timed); last seq {}",
        thousands(params.prefill as f64),
        dataset.authors.len(),
        KINDS.len(),
        TOPICS,
        started.elapsed().as_secs_f64(),
        dataset.last_seq
    );
    Ok(QuerySession { relay, dataset, key: reader })
}

/// Sends SUBSCRIBE and waits for EOSE; returns the time to EOSE and the events received.
pub async fn one_query(
    conn: &mut LeanConn,
    sub_id: &str,
    filter: Filter,
    after_seq: Option<u64>,
) -> CliResult<(u64, usize)> {
    let started = Instant::now();
    conn.send(&Frame::Subscribe(Subscribe { sub_id: sub_id.to_owned(), filters: vec![filter], after_seq })).await?;
    let mut events = 0;
    let answered = tokio::time::timeout(QUERY_TIMEOUT, async {
        loop {
            match conn.next_frame().await? {
                Some(Frame::Event(message)) if message.sub_id == sub_id => events += 1,
                Some(Frame::Eose { sub_id: done }) if done == sub_id => return CliResult::Ok(()),
                Some(Frame::Error(error)) if error.sub_id.as_deref() == Some(sub_id) => {
                    return Err(format!("query {sub_id} refused: {} {}", error.code, error.message).into())
                }
                Some(_) => {}
                None => return Err("connection closed during a query".into()),
            }
        }
    })
    .await;
    answered.map_err(|_| format!("no EOSE for query {sub_id} within {} s", QUERY_TIMEOUT.as_secs()))??;
    let elapsed = started.elapsed().as_nanos() as u64;
    conn.send(&Frame::Unsubscribe { sub_id: sub_id.to_owned() }).await?;
    Ok((elapsed, events))
}

/// The queries of one kind: a filter and an optional after_seq for query n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryKind {
    /// authors + kinds, limit.
    AuthorKind,
    /// one `t` value, limit.
    Tag,
    /// one full id.
    Ids,
    /// after_seq replay.
    Replay,
}

impl QueryKind {
    /// All four, in report order.
    pub const ALL: [QueryKind; 4] = [QueryKind::AuthorKind, QueryKind::Tag, QueryKind::Ids, QueryKind::Replay];

    /// Metric name prefix.
    pub fn name(self) -> &'static str {
        match self {
            QueryKind::AuthorKind => "author_kind",
            QueryKind::Tag => "tag",
            QueryKind::Ids => "ids",
            QueryKind::Replay => "replay",
        }
    }

    fn metric_names(self) -> [&'static str; 5] {
        match self {
            QueryKind::AuthorKind => [
                "author_kind_p50_ms",
                "author_kind_p99_ms",
                "author_kind_max_ms",
                "author_kind_qps",
                "author_kind_events",
            ],
            QueryKind::Tag => ["tag_p50_ms", "tag_p99_ms", "tag_max_ms", "tag_qps", "tag_events"],
            QueryKind::Ids => ["ids_p50_ms", "ids_p99_ms", "ids_max_ms", "ids_qps", "ids_events"],
            QueryKind::Replay => ["replay_p50_ms", "replay_p99_ms", "replay_max_ms", "replay_qps", "replay_events"],
        }
    }

    fn query(self, dataset: &Dataset, params: &QueryParams, n: usize) -> (Filter, Option<u64>) {
        match self {
            QueryKind::AuthorKind => (author_kind_filter(dataset, n, params.limit), None),
            QueryKind::Tag => (tag_filter(dataset, n, params.limit), None),
            QueryKind::Ids => (ids_filter(dataset, n), None),
            QueryKind::Replay => {
                (Filter::default(), Some(dataset.last_seq.saturating_sub(params.replay_events as u64)))
            }
        }
    }

    fn count(self, params: &QueryParams) -> usize {
        match self {
            QueryKind::Replay => params.replays,
            _ => params.queries,
        }
    }
}

/// Latencies and event counts of one series.
#[derive(Debug, Default)]
pub struct Series {
    /// Time to EOSE of each query (ns).
    pub latencies: Vec<u64>,
    /// Events each query returned (min, max).
    pub events: (usize, usize),
    /// Queries that never reached EOSE (Nostr side only: counted, not timed).
    pub dropped: usize,
}

impl Series {
    fn add(&mut self, latency: u64, events: usize) {
        if self.latencies.is_empty() {
            self.events = (events, events);
        }
        self.events = (self.events.0.min(events), self.events.1.max(events));
        self.latencies.push(latency);
    }
}

async fn series(
    conn: &mut LeanConn,
    kind: QueryKind,
    dataset: &Dataset,
    params: &QueryParams,
    worker: usize,
    measured: usize,
) -> CliResult<Series> {
    let mut series = Series::default();
    for n in 0..WARMUP + measured {
        let (filter, after_seq) = kind.query(dataset, params, n + worker * 1009);
        let (latency, events) = one_query(conn, &format!("q{n}"), filter, after_seq).await?;
        if n >= WARMUP {
            series.add(latency, events);
        }
    }
    Ok(series)
}

/// The one-line summary of a query run (Axon or Nostr).
pub fn summarize(metrics: &Metrics) -> String {
    let replay = if metrics.get("replay_events") > 0.0 {
        format!(
            "replay of {} p50 {} ms p99 {} ms",
            thousands(metrics.get("replay_events")),
            figure(metrics.get("replay_p50_ms")),
            figure(metrics.get("replay_p99_ms"))
        )
    } else {
        "replay n/a".to_owned()
    };
    format!(
        "query: author+kind p50 {} ms p99 {} ms ({} q/s), tag p50 {} ms p99 {} ms ({} q/s), \
         ids p50 {} ms p99 {} ms ({} q/s), {replay}; {} events stored, {} concurrent clients for q/s",
        figure(metrics.get("author_kind_p50_ms")),
        figure(metrics.get("author_kind_p99_ms")),
        thousands(metrics.get("author_kind_qps")),
        figure(metrics.get("tag_p50_ms")),
        figure(metrics.get("tag_p99_ms")),
        thousands(metrics.get("tag_qps")),
        figure(metrics.get("ids_p50_ms")),
        figure(metrics.get("ids_p99_ms")),
        thousands(metrics.get("ids_qps")),
        thousands(metrics.get("prefill")),
        metrics.get("connections"),
    )
}

/// Adds one kind's latency (sequential) and throughput (concurrent) figures.
pub fn add_kind(report: &mut Report, kind: QueryKind, sequential: Series, concurrent: (u64, Duration, Latency)) {
    let names = kind.metric_names();
    let events = sequential.events;
    let latency = Latency::of(sequential.latencies);
    report.metrics.set_latency([names[0], names[1], names[2]], &latency);
    report.metrics.set(names[3], rate(concurrent.0, concurrent.1));
    report.metrics.set(names[4], events.1 as f64);
    report.details.push(format!(
        "{}: one client {}; {} events per query (min {}); concurrent {} q/s, {}",
        kind.name(),
        latency.describe(),
        events.1,
        events.0,
        thousands(rate(concurrent.0, concurrent.1)),
        concurrent.2.describe()
    ));
}

impl QuerySession {
    /// One measured run: each kind of query, first one client in sequence (latency), then
    /// `connections` clients at once (queries/s).
    pub async fn run(&self, params: &QueryParams) -> CliResult<Report> {
        let mut report = Report { metrics: Metrics::default(), details: Vec::new(), summarize };
        report.metrics.set("prefill", self.dataset.count as f64);
        report.metrics.set("connections", params.connections as f64);
        for kind in QueryKind::ALL {
            // Fresh connections per phase: an idle connection would not answer the relay's
            // keep-alive pings while another phase runs (at 1,000,000 events a phase can
            // outlast two ping intervals).
            let mut conn = LeanConn::connect(&self.relay.url, &self.relay.relay_url, &self.key).await?;
            let sequential = series(&mut conn, kind, &self.dataset, params, 0, kind.count(params)).await?;
            conn.close().await;
            let mut conns = Vec::with_capacity(params.connections);
            for _ in 0..params.connections.max(1) {
                conns.push(LeanConn::connect(&self.relay.url, &self.relay.relay_url, &self.key).await?);
            }
            let started = Instant::now();
            let dataset = &self.dataset;
            let results: Vec<CliResult<Series>> = futures_util::future::join_all(
                conns
                    .iter_mut()
                    .enumerate()
                    .map(|(worker, conn)| series(conn, kind, dataset, params, worker + 1, kind.count(params))),
            )
            .await;
            let elapsed = started.elapsed();
            let mut samples = Vec::new();
            for result in results {
                samples.extend(result?.latencies);
            }
            // The concurrent phase includes each client's warm-up queries in its wall time.
            let total = samples.len() as u64 + (WARMUP * conns.len()) as u64;
            add_kind(&mut report, kind, sequential, (total, elapsed, Latency::of(samples)));
            for conn in conns {
                conn.close().await;
            }
        }
        self.relay.report_peak_rss(&mut report);
        Ok(report)
    }

    /// Stops the relay (and removes a scratch database).
    pub async fn finish(self) -> CliResult<()> {
        self.relay.stop().await
    }
}
