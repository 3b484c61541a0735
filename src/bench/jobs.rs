//! `jobs`: job queues (spec §14) end to end. J job requests are published (all before the
//! workers join with `--prefill`, else while they work); W workers in one group take
//! them with `max_in_flight` M each and complete every job with a signed result that
//! carries `ack`. Measures jobs completed per second and the offer latency: from the
//! job's publish being sent (or, with `--prefill`, from the workers joining) to its offer
//! reaching a worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use futures_util::future::join_all;

use crate::client::{Client, QueueItem};
use crate::protocol::{Event, EventId, Filter, Tag};

use super::gen::{run_nonce, sign_all, Draft};
use super::stats::{figure, rate, thousands, Latency, Metrics, Report};
use super::{join_tasks, CliResult, Target};

/// The job-request kind the scenario uses; results are this + 1000.
const JOB_KIND: u16 = 5000;

/// The kind of the stored event that marks where a run's group starts.
const MARKER_KIND: u16 = 1000;

/// The shape of a jobs run.
#[derive(Debug, Clone)]
pub struct JobsParams {
    /// Job requests published.
    pub jobs: usize,
    /// Workers in the group (one connection each).
    pub workers: usize,
    /// Leases each worker holds at once.
    pub in_flight: u64,
    /// Publish every job before the workers join (a pending backlog), else while they work.
    pub prefill: bool,
}

/// The one-line summary of a jobs run.
pub fn summarize(metrics: &Metrics) -> String {
    format!(
        "jobs: {} jobs/s ({} µs per job) completed by {} workers; offer latency p50 {} ms p99 {} ms",
        thousands(metrics.get("jobs_per_s")),
        figure(metrics.get("us_per_job")),
        metrics.get("workers"),
        figure(metrics.get("offer_p50_ms")),
        figure(metrics.get("offer_p99_ms")),
    )
}

/// When each job's clock starts (its publish, or the workers joining), by job id.
type Clocks = Arc<Mutex<HashMap<EventId, Instant>>>;

/// One jobs run against the Axon target.
pub async fn run(target: &Target, params: &JobsParams) -> CliResult<Report> {
    let keys = target.keys(1);
    let relay = target.start(&keys, &[]).await?;
    let jobs = sign_jobs(params.jobs, &keys).await?;
    let clocks: Clocks = Arc::new(Mutex::new(HashMap::with_capacity(jobs.len())));
    let publisher = Client::connect(&relay.url, &relay.relay_url, &keys[0]).await?;
    // The run's group starts after this marker: on a relay that already holds job
    // requests (`--url`, or the runs before this one) it queues only this run's jobs.
    let start = publisher.publish(&start_marker(&keys[0])?).await?;
    if params.prefill {
        publish_all(&publisher, &jobs, &clocks, false).await?;
    }
    let group = format!("bench-{}", run_nonce());
    let started = Instant::now();
    if params.prefill {
        let mut clocks = crate::sync::lock(&clocks);
        for job in &jobs {
            clocks.insert(job.id, started);
        }
    }
    let progress = Arc::new(Progress::new(params.jobs));
    let mut workers = Vec::with_capacity(params.workers);
    for _ in 0..params.workers {
        let client = Client::connect(&relay.url, &relay.relay_url, &keys[0]).await?;
        let worker = Worker { group: group.clone(), start, in_flight: params.in_flight, key: keys[0].clone() };
        workers.push(tokio::spawn(worker.run(client, clocks.clone(), progress.clone())));
    }
    if !params.prefill {
        publish_all(&publisher, &jobs, &clocks, true).await?;
    }
    let latencies: Vec<u64> = join_tasks(workers, "worker").await?.into_iter().collect::<CliResult<Vec<_>>>()?.concat();
    let elapsed = started.elapsed();
    if latencies.len() != params.jobs {
        return Err(format!("{} of {} jobs were completed", latencies.len(), params.jobs).into());
    }
    let latency = Latency::of(latencies);
    let mut metrics = Metrics::default();
    metrics.set("jobs_per_s", rate(params.jobs as u64, elapsed));
    metrics.set("us_per_job", elapsed.as_secs_f64() * 1e6 / params.jobs.max(1) as f64);
    metrics.set("workers", params.workers as f64);
    metrics.set_latency(["offer_p50_ms", "offer_p90_ms", "offer_p99_ms"], &latency);
    let mut report = Report { metrics, details: Vec::new(), summarize };
    report.details.push(format!(
        "{} jobs, {} workers × max_in_flight {}, {}; offer latency {}",
        params.jobs,
        params.workers,
        params.in_flight,
        if params.prefill {
            "all pending before the workers joined (latency counts from the join: the backlog's wait)"
        } else {
            "published while they worked (latency counts from each publish)"
        },
        latency.describe()
    ));
    relay.report_peak_rss(&mut report);
    relay.stop().await?;
    Ok(report)
}

/// Signs `count` job requests (prepared before timing starts).
async fn sign_jobs(count: usize, keys: &[SigningKey]) -> CliResult<Vec<Event>> {
    let keys = keys.to_vec();
    let nonce = run_nonce();
    tokio::task::spawn_blocking(move || {
        sign_all(count, &keys, |index| Draft {
            key: 0,
            created_at: crate::relay::unix_now(),
            kind: JOB_KIND,
            content: format!("{nonce} job {index}").into_bytes(),
            tags: Vec::new(),
        })
    })
    .await
    .map_err(|error| format!("signing failed: {error}"))?
}

/// Publishes every job, pipelined; with `stamp`, records when each was sent.
async fn publish_all(publisher: &Client, jobs: &[Event], clocks: &Clocks, stamp: bool) -> CliResult<()> {
    for chunk in jobs.chunks(256) {
        if stamp {
            let now = Instant::now();
            let mut clocks = crate::sync::lock(clocks);
            for job in chunk {
                clocks.insert(job.id, now);
            }
        }
        for answer in join_all(chunk.iter().map(|job| publisher.publish(job))).await {
            answer?;
        }
    }
    Ok(())
}

/// Jobs completed so far, and the signal that all are.
struct Progress {
    total: usize,
    completed: AtomicUsize,
    all_done: tokio::sync::watch::Sender<bool>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress { total, completed: AtomicUsize::new(0), all_done: tokio::sync::watch::Sender::new(total == 0) }
    }

    fn complete_one(&self) {
        if self.completed.fetch_add(1, Ordering::SeqCst) + 1 >= self.total {
            self.all_done.send_replace(true);
        }
    }
}

/// A stored event marking where the run's group starts.
fn start_marker(key: &SigningKey) -> CliResult<Event> {
    let content = format!("bench jobs start {}", run_nonce()).into_bytes();
    Ok(Event::sign(key, crate::relay::unix_now(), MARKER_KIND, content, Vec::new())?)
}

/// One worker of the group.
struct Worker {
    group: String,
    /// The group starts after this seq (None: the beginning of the log).
    start: Option<u64>,
    in_flight: u64,
    key: SigningKey,
}

impl Worker {
    /// Takes offers and completes each with a signed result carrying `ack` until every
    /// job of the run is completed (by any worker); returns each offer's latency (ns).
    async fn run(self, client: Client, clocks: Clocks, progress: Arc<Progress>) -> CliResult<Vec<u64>> {
        let filter = Filter { kinds: Some(vec![JOB_KIND]), ..Filter::default() };
        let mut offers =
            client.subscribe_queue_after("work", &self.group, vec![filter], 60, self.in_flight, self.start).await?;
        let client = Arc::new(client);
        let mut all_done = progress.all_done.subscribe();
        let mut latencies = Vec::new();
        let mut completions = Vec::new();
        loop {
            let job = tokio::select! {
                _ = all_done.wait_for(|done| *done) => break,
                item = offers.next() => match item {
                    Some(QueueItem::Job { event, .. }) => event,
                    Some(QueueItem::Ended(error)) => return Err(format!("the queue ended: {}", error.message).into()),
                    None => return Err("the connection closed".into()),
                },
            };
            let offered = Instant::now();
            let since = crate::sync::lock(&clocks).get(&job.id).copied().unwrap_or(offered);
            latencies.push(offered.saturating_duration_since(since).as_nanos() as u64);
            completions.push(tokio::spawn(complete(client.clone(), self.key.clone(), job, progress.clone())));
        }
        for outcome in join_all(completions).await {
            outcome.map_err(|error| format!("a completion failed: {error}"))??;
        }
        Ok(latencies)
    }
}

/// Publishes the result of `job` with `ack` (kind + 1000, an `e` tag naming the job).
async fn complete(client: Arc<Client>, key: SigningKey, job: Box<Event>, progress: Arc<Progress>) -> CliResult<()> {
    let tags = vec![Tag { name: "e".into(), values: vec![hex::encode(job.id)] }];
    let result = Event::sign(&key, crate::relay::unix_now(), JOB_KIND + 1000, b"done".to_vec(), tags)?;
    tokio::time::timeout(Duration::from_secs(60), client.publish_ack(&result, "work", job.id))
        .await
        .map_err(|_| "no answer to a completing publish within 60 s")??;
    progress.complete_one();
    Ok(())
}
