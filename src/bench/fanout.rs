//! `fanout`: S live subscriptions with a matching filter while P publishers send R events/s
//! for D seconds; deliveries/s, publish→delivery latency and overflows.
//!
//! Event `j` carries `j` in the first 8 bytes of its content; the publisher records the
//! moment it hands event `j` to the client (nanoseconds since a shared `Instant`), and a
//! subscriber computes latency as its receive time minus that. Events are scheduled at
//! fixed offsets (also in the content) so the offered rate does not depend on the relay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{oneshot, watch};

use crate::client::Client;
use crate::clock::unix_now;
use crate::protocol::frame::{EventMessage, Subscribe};
use crate::protocol::{ErrorCode, Filter, Frame, TagFilter};

use super::gen::{content, content_head, prepare_all, pseudo_id, run_nonce, standard_tags, Draft, Prepared};
use super::lean::{raw_content, LeanConn};
use super::stats::{figure, ms, rate, thousands, Latency, Metrics, Report};
use super::{CliResult, Target};

/// The shape of a fan-out run (shared with the Nostr side).
#[derive(Debug, Clone)]
pub struct FanoutParams {
    /// Live subscriptions in total, each matching every published event.
    pub subscribers: usize,
    /// Connections the subscriptions are spread over.
    pub subscriber_connections: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Events per second, all publishers together.
    pub rate: f64,
    /// Seconds of publishing.
    pub duration: f64,
    /// Content size in bytes (at least 16).
    pub content_bytes: usize,
}

impl FanoutParams {
    /// Events published in total.
    pub fn total_events(&self) -> usize {
        (self.rate * self.duration).round().max(1.0) as usize
    }

    /// Scheduled offset of event `index` from the start (ns).
    pub fn offset_ns(&self, index: usize) -> u64 {
        (index as f64 * 1e9 / self.rate.max(0.001)) as u64
    }

    /// Subscriptions on each subscriber connection.
    pub fn split(&self) -> Vec<usize> {
        let connections = self.subscriber_connections.clamp(1, self.subscribers.max(1));
        (0..connections)
            .map(|index| self.subscribers / connections + usize::from(index < self.subscribers % connections))
            .collect()
    }
}

/// Where every side of the run meets: send times and the delivery counter.
pub struct Shared {
    /// The shared time base.
    pub base: Instant,
    /// Nanoseconds since `base` when event j was handed to the client (0 = not yet).
    pub sent_at: Vec<AtomicU64>,
    /// Deliveries so far, all subscribers together.
    pub deliveries: AtomicU64,
}

impl Shared {
    /// A time base now and `events` empty send slots.
    pub fn new(events: usize) -> Shared {
        Shared {
            base: Instant::now(),
            sent_at: (0..events).map(|_| AtomicU64::new(0)).collect(),
            deliveries: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the base (at least 1).
    pub fn now_ns(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).max(1)
    }

    /// Records a delivery of the event whose content starts with its index; returns the
    /// latency when the send time is known.
    pub fn delivered(&self, content: &[u8]) -> Option<u64> {
        self.delivered_index(content_head(content).map(|(index, _)| index))
    }

    /// Records a delivery of event `index` (if it could be read); returns the latency when
    /// the send time is known.
    pub fn delivered_index(&self, index: Option<u64>) -> Option<u64> {
        let now = self.now_ns();
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let sent = self.sent_at.get(usize::try_from(index?).ok()?)?.load(Ordering::Acquire);
        (sent > 0).then(|| now.saturating_sub(sent))
    }

    /// Marks event `index` as sent now.
    pub fn mark_sent(&self, index: usize) -> u64 {
        let now = self.now_ns();
        if let Some(slot) = self.sent_at.get(index) {
            slot.store(now, Ordering::Release);
        }
        now
    }

    /// The earliest send time (ns since base), if any event was sent.
    pub fn first_sent(&self) -> Option<u64> {
        self.sent_at.iter().map(|slot| slot.load(Ordering::Acquire)).filter(|&sent| sent > 0).min()
    }
}

/// What one subscriber connection saw.
#[derive(Debug, Default)]
pub struct SubOutcome {
    /// Publish→delivery latencies (ns).
    pub latencies: Vec<u64>,
    /// Events received.
    pub deliveries: u64,
    /// Subscriptions ended with ERROR 503.
    pub overflows: u64,
    /// Other errors and their messages.
    pub errors: Vec<String>,
    /// Time of the last delivery (ns since base).
    pub last_delivery: u64,
}

/// What one publisher saw.
#[derive(Debug, Default)]
pub struct PubOutcome {
    /// Events acknowledged.
    pub acknowledged: u64,
    /// Publishes refused (first few messages).
    pub errors: Vec<String>,
    /// How late each send was against its schedule (ns).
    pub lateness: Vec<u64>,
    /// Time of the last send (ns since base).
    pub last_sent: u64,
}

/// Runs `work` on a thread of its own with a single-threaded runtime, so publishers keep
/// their schedule while the benchmark's other threads are busy receiving.
pub async fn on_own_thread<T, F, Fut>(work: F) -> CliResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = CliResult<T>>,
{
    let (sender, receiver) = oneshot::channel();
    std::thread::Builder::new()
        .name("bench-publisher".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(work()),
                Err(error) => Err(format!("cannot start the publisher runtime: {error}").into()),
            };
            let _ = sender.send(result);
        })
        .map_err(|error| format!("cannot start the publisher thread: {error}"))?;
    receiver.await.map_err(|_| "the publisher thread died")?
}

/// Waits until `expected` deliveries arrived, or nothing arrived for `idle`.
pub async fn await_deliveries(shared: &Shared, expected: u64, idle: Duration) {
    let mut last = shared.deliveries.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while last < expected && last_change.elapsed() < idle {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = shared.deliveries.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
}

async fn subscriber(
    mut conn: LeanConn,
    sub_ids: Vec<String>,
    filter: Filter,
    shared: Arc<Shared>,
    ready: oneshot::Sender<CliResult<()>>,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    let mut outcome = SubOutcome::default();
    let setup = async {
        for sub_id in &sub_ids {
            conn.feed(&Frame::Subscribe(Subscribe {
                sub_id: sub_id.clone(),
                filters: vec![filter.clone()],
                after_seq: None,
            }))
            .await?;
        }
        conn.flush().await?;
        let mut eose = 0;
        while eose < sub_ids.len() {
            match conn.next_frame().await? {
                Some(Frame::Eose { .. }) => eose += 1,
                Some(Frame::Error(error)) => {
                    return Err(format!("SUBSCRIBE refused: {} {}", error.code, error.message).into())
                }
                Some(_) => {}
                None => return Err("connection closed during SUBSCRIBE".into()),
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
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            frame = conn.next_frame() => frame,
        };
        match frame {
            Ok(Some(Frame::Event(EventMessage { event, .. }))) => {
                if let Some(latency) = raw_content(event.as_bytes()).and_then(|content| shared.delivered(content)) {
                    outcome.latencies.push(latency);
                }
                outcome.deliveries += 1;
                outcome.last_delivery = shared.now_ns();
            }
            Ok(Some(Frame::Error(error))) if error.code == ErrorCode::Unavailable.as_u16() => outcome.overflows += 1,
            Ok(Some(Frame::Error(error))) => outcome.errors.push(format!("{} {}", error.code, error.message)),
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
    client: Arc<Client>,
    events: Vec<(usize, u64, Prepared)>,
    shared: Arc<Shared>,
    start_ns: u64,
) -> PubOutcome {
    scheduled_publisher(events, shared, start_ns, move |event: Prepared| {
        let client = client.clone();
        async move { client.publish_raw(event.id, event.raw).await.map(|_| ()).map_err(|error| error.to_string()) }
    })
    .await
}

/// Sends each event at its offset (ns after `start_ns`), keeping to the schedule while
/// earlier publishes wait for their acknowledgement; `publish` returns a lazy future that
/// resolves when the relay acknowledged the event (shared with the Nostr side by side).
pub(crate) async fn scheduled_publisher<E, F, Fut>(
    events: Vec<(usize, u64, E)>,
    shared: Arc<Shared>,
    start_ns: u64,
    publish: F,
) -> PubOutcome
where
    F: Fn(E) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let mut outcome = PubOutcome::default();
    let mut pending = FuturesUnordered::new();
    for (index, offset, event) in events {
        let due = shared.base + Duration::from_nanos(start_ns + offset);
        while Instant::now() < due {
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => break,
                Some(result) = pending.next(), if !pending.is_empty() => record(&mut outcome, result),
            }
        }
        let slots = shared.clone();
        let publishing = publish(event);
        pending.push(tokio::spawn(async move {
            let sent = slots.mark_sent(index);
            (sent, publishing.await)
        }));
        outcome.lateness.push(shared.now_ns().saturating_sub(start_ns + offset));
    }
    while let Some(result) = pending.next().await {
        record(&mut outcome, result);
    }
    outcome
}

type PublishJoin = Result<(u64, Result<(), String>), tokio::task::JoinError>;

fn record(outcome: &mut PubOutcome, result: PublishJoin) {
    match result {
        Ok((sent, Ok(()))) => {
            outcome.acknowledged += 1;
            outcome.last_sent = outcome.last_sent.max(sent);
        }
        Ok((sent, Err(error))) => {
            outcome.last_sent = outcome.last_sent.max(sent);
            if outcome.errors.len() < 5 {
                outcome.errors.push(error);
            }
        }
        Err(error) => outcome.errors.push(format!("publish task failed: {error}")),
    }
}

/// The one-line summary of a fan-out run (Axon or Nostr).
pub fn summarize(metrics: &Metrics) -> String {
    format!(
        "fanout: {} deliveries/s, publish→delivery p50 {} ms p99 {} ms max {} ms, {} overflows \
         ({} subscribers on {} connections, {} publishers at {} events/s for {} s; {} of {} delivered)",
        thousands(metrics.get("deliveries_per_s")),
        figure(metrics.get("delivery_p50_ms")),
        figure(metrics.get("delivery_p99_ms")),
        figure(metrics.get("delivery_max_ms")),
        metrics.get("overflows"),
        metrics.get("subscribers"),
        metrics.get("subscriber_connections"),
        metrics.get("publishers"),
        thousands(metrics.get("rate")),
        metrics.get("duration_s"),
        thousands(metrics.get("delivered")),
        thousands(metrics.get("expected")),
    )
}

/// Builds the report from what the subscribers and publishers saw.
pub fn report(params: &FanoutParams, shared: &Shared, subs: Vec<SubOutcome>, pubs: Vec<PubOutcome>) -> Report {
    let total = params.total_events() as u64;
    let expected = total * params.subscribers as u64;
    let mut samples = Vec::new();
    let (mut delivered, mut overflows, mut last_delivery) = (0u64, 0u64, 0u64);
    let mut sub_errors = Vec::new();
    for outcome in subs {
        samples.extend(outcome.latencies);
        delivered += outcome.deliveries;
        overflows += outcome.overflows;
        last_delivery = last_delivery.max(outcome.last_delivery);
        sub_errors.extend(outcome.errors.into_iter().take(3));
    }
    let (mut acknowledged, mut lateness, mut pub_errors, mut last_sent) = (0u64, Vec::new(), Vec::new(), 0u64);
    for outcome in pubs {
        acknowledged += outcome.acknowledged;
        lateness.extend(outcome.lateness);
        pub_errors.extend(outcome.errors);
        last_sent = last_sent.max(outcome.last_sent);
    }
    let first_sent = shared.first_sent().unwrap_or(0);
    let window = Duration::from_nanos(last_delivery.saturating_sub(first_sent));
    let latency = Latency::of(samples);
    let lateness = Latency::of(lateness);
    let connections = params.split().len();
    let mut metrics = Metrics::default();
    metrics.set("deliveries_per_s", rate(delivered, window));
    metrics.set_latency(["delivery_p50_ms", "delivery_p99_ms", "delivery_max_ms"], &latency);
    metrics.set("overflows", overflows as f64);
    metrics.set("subscribers", params.subscribers as f64);
    metrics.set("subscriber_connections", connections as f64);
    metrics.set("publishers", params.publishers as f64);
    metrics.set("rate", params.rate);
    metrics.set("duration_s", params.duration);
    metrics.set("delivered", delivered as f64);
    metrics.set("expected", expected as f64);
    metrics.set("sent_per_s", rate(total, Duration::from_nanos(last_sent.saturating_sub(first_sent))));
    let mut details = vec![
        format!("publish→delivery {}", latency.describe()),
        format!(
            "{} events published ({} acknowledged) in {:.2} s = {} events/s offered; send lateness vs schedule p99 {} max {}",
            thousands(total as f64),
            thousands(acknowledged as f64),
            last_sent.saturating_sub(first_sent) as f64 / 1e9,
            thousands(metrics.get("sent_per_s")),
            ms(lateness.p99),
            ms(lateness.max)
        ),
        format!(
            "{} of {} deliveries in {:.2} s (first send to last delivery); subscriptions per connection {:?}",
            thousands(delivered as f64),
            thousands(expected as f64),
            window.as_secs_f64(),
            params.split().iter().max().copied().unwrap_or(0)
        ),
    ];
    if !pub_errors.is_empty() {
        details.push(format!("publish errors (first): {pub_errors:?}"));
    }
    if !sub_errors.is_empty() {
        details.push(format!("subscriber errors (first): {sub_errors:?}"));
    }
    Report { metrics, details, summarize }
}

/// One fan-out run against the Axon target.
pub async fn run(target: &Target, params: &FanoutParams) -> CliResult<Report> {
    let publishers = params.publishers.max(1);
    let keys = target.keys(publishers + 1);
    let subscriber_key = keys[publishers].clone();
    let nonce = run_nonce();
    let topic = format!("fanout-{nonce}");
    let now = unix_now();
    let total = params.total_events();
    let pubkeys: Vec<[u8; 32]> = keys.iter().map(|key| key.verifying_key().to_bytes()).collect();
    let events = tokio::task::block_in_place(|| {
        prepare_all(total, &keys, |index| Draft {
            key: index % publishers,
            created_at: now,
            kind: 1000,
            content: content(params.content_bytes, index as u64, params.offset_ns(index)),
            tags: standard_tags(&topic, &pubkeys[publishers], &pseudo_id(&nonce, index as u64)),
        })
    })?;
    let mut per_publisher: Vec<Vec<(usize, u64, Prepared)>> = (0..publishers).map(|_| Vec::new()).collect();
    for (index, event) in events.into_iter().enumerate() {
        per_publisher[index % publishers].push((index, params.offset_ns(index), event));
    }
    let split = params.split();
    let per_connection = split.iter().max().copied().unwrap_or(1) as u64;
    let relay = target
        .start(
            &keys,
            &[
                ("max_subscriptions", per_connection.max(32)),
                ("max_connections", (split.len() + publishers + 100) as u64),
            ],
        )
        .await?;

    let shared = Arc::new(Shared::new(total));
    let filter = Filter {
        kinds: Some(vec![1000]),
        tags: Some(vec![TagFilter { name: "t".into(), values: vec![topic.clone()] }]),
        limit: Some(0),
        ..Filter::default()
    };
    let (stop, stopped) = watch::channel(false);
    let mut subscriber_tasks = Vec::with_capacity(split.len());
    let mut readiness = Vec::with_capacity(split.len());
    let mut next_sub = 0;
    for count in &split {
        let conn = LeanConn::connect(&relay.url, &relay.relay_url, &subscriber_key).await?;
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
    let publisher_keys: Vec<_> = keys.iter().take(publishers).cloned().collect();
    let (url, relay_url, publishing) = (relay.url.clone(), relay.relay_url.clone(), shared.clone());
    let cpu_start = relay.cpu();
    let pubs = on_own_thread(move || async move {
        let mut clients = Vec::with_capacity(publisher_keys.len());
        for key in &publisher_keys {
            clients.push(Arc::new(Client::connect(&url, &relay_url, key).await?));
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
    let cpu_end = relay.cpu();
    let _ = stop.send(true);
    let subs = super::join_tasks(subscriber_tasks, "a subscriber").await?;
    let mut report = report(params, &shared, subs, pubs);
    cpu_end.report_since(&cpu_start, &mut report);
    relay.report_peak_rss(&mut report);
    relay.stop().await?;
    Ok(report)
}
