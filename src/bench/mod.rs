//! `axon bench`: load scenarios against a relay running as a separate process.
//!
//! Every scenario prepares its keys and signed events before timing starts, measures with
//! the client library (or, on the receiving side, a lean frame reader), and returns a
//! [`Report`]: figures, a one-line summary and detail lines. [`repeat`] runs a scenario
//! several times and prints each run and the median of every figure.
//!
//! Scenarios: [`ingest`], [`fanout`], [`query`], [`connections`], [`slow`], [`jobs`], [`ceiling`]. With the
//! `nostr-bench` feature, [`nostr`] runs ingest, fan-out and query against a NIP-01 relay
//! with the same shapes, for a side-by-side comparison.

pub mod ceiling;
pub mod connections;
pub mod fanout;
pub mod gen;
pub mod ingest;
pub mod jobs;
pub mod lean;
#[cfg(feature = "nostr-bench")]
pub mod nostr;
pub mod query;
pub mod slow;
pub mod spawn;
pub mod stats;

use ed25519_dalek::SigningKey;

use spawn::{ScratchDir, SpawnConfig, SpawnedRelay};
pub use stats::{Metrics, Report};

/// Errors are reported as text.
pub use crate::cli::CliResult;

/// Which Axon relay to measure.
#[derive(Clone)]
pub enum Target {
    /// Start `axon relay` per run (or per prefill) with a scratch database.
    Spawn(SpawnConfig),
    /// An existing relay: its address, its relay_url and a key it allows.
    Url {
        /// ws://host:port to connect to.
        url: String,
        /// The relay_url AUTH signatures bind.
        relay_url: String,
        /// An allowed key; every connection authenticates and every event is signed with it.
        key: Box<SigningKey>,
        /// The relay's process id, to read its memory use (optional).
        pid: Option<u32>,
    },
    /// No Axon relay (only the Nostr side runs).
    Nothing,
}

/// A relay ready for a run.
pub struct Running {
    /// ws://host:port.
    pub url: String,
    /// The relay_url AUTH signatures bind.
    pub relay_url: String,
    /// Declared before `_dir` so the relay stops before its directory is removed.
    relay: Option<SpawnedRelay>,
    _dir: Option<ScratchDir>,
    pid: Option<u32>,
}

impl Running {
    /// The relay's resident memory in KiB, when its process is known.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid.and_then(|pid| spawn::proc_status_kib(pid, "VmRSS"))
    }

    /// The relay's peak resident memory in KiB, when its process is known.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.pid.and_then(|pid| spawn::proc_status_kib(pid, "VmHWM"))
    }

    /// Adds the relay's peak resident memory to `report`, when its process is known.
    pub fn report_peak_rss(&self, report: &mut Report) {
        if let Some(peak) = self.peak_rss_kib() {
            report.metrics.set("relay_peak_rss_mib", peak as f64 / 1024.0);
            report.details.push(format!("relay peak RSS {:.1} MiB", peak as f64 / 1024.0));
        }
    }

    /// CPU seconds used so far by the relay and by this benchmark process.
    pub fn cpu(&self) -> CpuMark {
        CpuMark {
            relay: self.pid.and_then(spawn::cpu_seconds),
            bench: spawn::cpu_seconds(std::process::id()),
            at: std::time::Instant::now(),
        }
    }

    /// Stops a spawned relay (SIGTERM, drain); nothing for an existing one.
    pub async fn stop(mut self) -> CliResult<()> {
        match self.relay.take() {
            Some(relay) => tokio::task::spawn_blocking(move || relay.stop())
                .await
                .map_err(|error| format!("stopping the relay failed: {error}"))?,
            None => Ok(()),
        }
    }
}

/// CPU seconds used by the relay and the benchmark at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    relay: Option<f64>,
    bench: Option<f64>,
    at: std::time::Instant,
}

impl CpuMark {
    /// Adds "CPU between the marks" figures and a detail line to `report`.
    pub fn report_since(&self, start: &CpuMark, report: &mut Report) {
        let wall = self.at.duration_since(start.at).as_secs_f64().max(1e-9);
        let cores = gen::cores() as f64;
        let mut parts = Vec::new();
        if let (Some(end), Some(begin)) = (self.relay, start.relay) {
            let percent = 100.0 * (end - begin) / wall;
            report.metrics.set("relay_cpu_pct", percent);
            parts.push(format!("relay {:.1} s ({percent:.0}% of one core)", end - begin));
        }
        if let (Some(end), Some(begin)) = (self.bench, start.bench) {
            let percent = 100.0 * (end - begin) / wall;
            report.metrics.set("bench_cpu_pct", percent);
            parts.push(format!("bench {:.1} s ({percent:.0}% of one core)", end - begin));
        }
        if !parts.is_empty() {
            report
                .details
                .push(format!("CPU over the {wall:.2} s measured: {}; {cores} cores in all", parts.join(", ")));
        }
    }
}

impl Target {
    /// True when there is an Axon relay to measure.
    pub fn is_some(&self) -> bool {
        !matches!(self, Target::Nothing)
    }

    /// `count` keys to author events and authenticate with: fresh ones when spawning (the
    /// relay is configured to allow them), else the given key `count` times.
    pub fn keys(&self, count: usize) -> Vec<SigningKey> {
        match self {
            Target::Url { key, .. } => vec![(**key).clone(); count],
            _ => gen::random_keys(count),
        }
    }

    /// Starts a relay allowing `allow` (when spawning) with extra `limits:` entries.
    pub async fn start(&self, allow: &[SigningKey], limits: &[(&str, u64)]) -> CliResult<Running> {
        match self {
            Target::Spawn(config) => {
                let dir = ScratchDir::create(config.db_dir.as_deref())?;
                self.start_in(dir, allow, limits).await
            }
            _ => self.existing(),
        }
    }

    /// Creates the scratch directory a spawned relay will use (for a prefill before start).
    pub fn scratch(&self) -> CliResult<Option<ScratchDir>> {
        match self {
            Target::Spawn(config) => Ok(Some(ScratchDir::create(config.db_dir.as_deref())?)),
            _ => Ok(None),
        }
    }

    /// Starts a spawned relay on an existing scratch directory.
    pub async fn start_in(&self, dir: ScratchDir, allow: &[SigningKey], limits: &[(&str, u64)]) -> CliResult<Running> {
        let Target::Spawn(config) = self else {
            return self.existing();
        };
        let keys: Vec<[u8; 32]> = allow.iter().map(|key| key.verifying_key().to_bytes()).collect();
        let config = config.clone();
        let limits: Vec<(String, u64)> = limits.iter().map(|(name, value)| (name.to_string(), *value)).collect();
        let (relay, dir) = tokio::task::spawn_blocking(move || {
            let limits: Vec<(&str, u64)> = limits.iter().map(|(name, value)| (name.as_str(), *value)).collect();
            SpawnedRelay::start(&config, &dir, &keys, &limits).map(|relay| (relay, dir))
        })
        .await
        .map_err(|error| format!("starting the relay failed: {error}"))??;
        Ok(Running {
            url: relay.url.clone(),
            relay_url: relay.relay_url.clone(),
            pid: Some(relay.pid()),
            relay: Some(relay),
            _dir: Some(dir),
        })
    }

    fn existing(&self) -> CliResult<Running> {
        match self {
            Target::Url { url, relay_url, pid, .. } => {
                Ok(Running { url: url.clone(), relay_url: relay_url.clone(), relay: None, _dir: None, pid: *pid })
            }
            _ => Err("no Axon relay to measure: give --spawn or --url".into()),
        }
    }
}

/// The reports of one run: one per side ("axon", "nostr").
pub type RunReports = Vec<(&'static str, Report)>;

/// Waits for every task in order; a task that panicked or was cancelled fails the run,
/// named by `what` ("a subscriber").
pub async fn join_tasks<T>(tasks: Vec<tokio::task::JoinHandle<T>>, what: &str) -> CliResult<Vec<T>> {
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.map_err(|error| format!("{what} failed: {error}"))?);
    }
    Ok(outputs)
}

/// Runs `once` for runs 1..=`runs`, printing each run's summary and details, then (with
/// more than one run) the median of every figure, and with two sides their ratios.
pub async fn repeat(runs: usize, mut once: impl AsyncFnMut(usize) -> CliResult<RunReports>) -> CliResult<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; measure with `cargo build --release` and target/release/axon");
    }
    let runs = runs.max(1);
    let mut all: Vec<RunReports> = Vec::with_capacity(runs);
    for run in 1..=runs {
        let reports = once(run).await?;
        let sides = reports.len();
        for (label, report) in &reports {
            let prefix = if sides > 1 { format!("[{label}] ") } else { String::new() };
            let counter = if runs > 1 { format!("run {run}/{runs}: ") } else { String::new() };
            println!("{prefix}{counter}{}", report.summary());
            for line in &report.details {
                println!("    {line}");
            }
        }
        print_ratios(&reports);
        all.push(reports);
    }
    if runs > 1 {
        let Some(first) = all.first() else {
            return Ok(());
        };
        let mut medians: RunReports = Vec::new();
        for (index, (label, report)) in first.iter().enumerate() {
            let metrics: Vec<&Metrics> =
                all.iter().filter_map(|reports| reports.get(index).map(|(_, report)| &report.metrics)).collect();
            let median = stats::median_metrics(&metrics);
            let prefix = if first.len() > 1 { format!("[{label}] ") } else { String::new() };
            println!("{prefix}median of {runs} runs: {}", (report.summarize)(&median));
            for line in stats::spread_lines(&metrics) {
                println!("    {line}");
            }
            medians.push((label, Report { metrics: median, details: Vec::new(), summarize: report.summarize }));
        }
        print_ratios(&medians);
    }
    Ok(())
}

/// Figures compared across sides: (name, higher is better).
const COMPARED: &[(&str, bool)] = &[
    ("events_per_s", true),
    ("ok_p50_ms", false),
    ("ok_p99_ms", false),
    ("deliveries_per_s", true),
    ("delivery_p50_ms", false),
    ("delivery_p99_ms", false),
    ("author_kind_p50_ms", false),
    ("author_kind_p99_ms", false),
    ("author_kind_qps", true),
    ("tag_p50_ms", false),
    ("tag_p99_ms", false),
    ("tag_qps", true),
    ("ids_p50_ms", false),
    ("ids_qps", true),
    ("replay_p50_ms", false),
];

fn print_ratios(reports: &RunReports) {
    let [(first, a), (second, b)] = reports.as_slice() else {
        return;
    };
    let mut parts = Vec::new();
    for (name, higher_is_better) in COMPARED {
        let (x, y) = (a.metrics.get(name), b.metrics.get(name));
        if x <= 0.0 || y <= 0.0 {
            continue;
        }
        let ratio = if *higher_is_better { x / y } else { y / x };
        parts.push(format!("{name} {ratio:.1}x"));
    }
    if !parts.is_empty() {
        println!("{first} vs {second} (>1 means {first} is better): {}", parts.join(", "));
    }
}
