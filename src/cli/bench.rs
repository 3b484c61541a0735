//! `axon bench`: load scenarios against a relay running as a separate process. Each
//! scenario prints one summary line plus details; `--runs N` repeats it and prints the
//! median of every figure. See docs/benchmarks.md.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliResult;
use crate::bench::ceiling::CeilingParams;
use crate::bench::connections::ConnectionsParams;
use crate::bench::fanout::FanoutParams;
use crate::bench::ingest::IngestParams;
use crate::bench::jobs::JobsParams;
use crate::bench::query::QueryParams;
use crate::bench::slow::SlowParams;
use crate::bench::spawn::SpawnConfig;
use crate::bench::{repeat, RunReports, Target};

/// Arguments of `axon bench`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N pre-signed events over C connections, W publishes in flight per connection:
    /// acknowledged events/s and OK latency p50/p99.
    ///
    /// Example: axon bench ingest --spawn --events 100000 --connections 4 --in-flight 64
    Ingest {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        nostr: NostrArgs,
        /// Events in total.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Publishing connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Publishes awaiting their OK per connection.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Content size in bytes (every event also has tags t, p and e).
        #[arg(long, default_value_t = 200)]
        content_bytes: usize,
        /// Send every event with an invalid signature (one bit of S flipped): the rate at
        /// which the relay refuses them (each gets ERROR 400).
        #[arg(long)]
        invalid_signatures: bool,
    },
    /// S live subscriptions matching every event while P publishers send R events/s for D
    /// seconds: deliveries/s, publish→delivery latency p50/p99/max, overflows.
    ///
    /// Example: axon bench fanout --spawn --subscribers 1000 --rate 1000 --duration 10
    Fanout {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        nostr: NostrArgs,
        /// Live subscriptions in total.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Connections the subscriptions are spread over (default: 20 subscriptions each).
        #[arg(long)]
        subscriber_connections: Option<usize>,
        /// Publishing connections.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Events per second, all publishers together.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Content size in bytes (at least 16).
        #[arg(long, default_value_t = 200)]
        content_bytes: usize,
    },
    /// Stored-query latency and queries/s on a database pre-filled with M events:
    /// author+kind (limit 500), tag (limit 500), ids lookup, after_seq replay.
    ///
    /// Example: axon bench query --spawn --prefill 1000000
    Query {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        nostr: NostrArgs,
        /// Events stored before measuring (filled by a fast path, not timed).
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(10..=10_000_000))]
        prefill: u64,
        /// Measured queries of each kind per client.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Measured replays per client.
        #[arg(long, default_value_t = 20)]
        replays: usize,
        /// Events each after_seq replay returns.
        #[arg(long, default_value_t = 10_000)]
        replay_events: usize,
        /// Clients querying at once for queries/s (latency is measured with one).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// `limit` of the author+kind and tag queries.
        #[arg(long, default_value_t = 500)]
        limit: u64,
        /// Content size of the prefilled events.
        #[arg(long, default_value_t = 200)]
        content_bytes: usize,
    },
    /// K authenticated idle connections with one subscription each: relay RSS per
    /// connection and the connect+auth rate.
    ///
    /// Example: axon bench connections --spawn --count 10000
    Connections {
        #[command(flatten)]
        target: TargetArgs,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Handshakes in progress at once.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// Distinct keys the connections authenticate with (spawned relay).
        #[arg(long, default_value_t = 16)]
        keys: usize,
    },
    /// Job queues (spec §14): J jobs completed by W workers in one group, each holding M
    /// leases; jobs completed per second and the offer latency.
    ///
    /// Example: axon bench jobs --spawn --jobs 10000 --workers 100 --in-flight 4 --prefill
    Jobs {
        #[command(flatten)]
        target: TargetArgs,
        /// Job requests published.
        #[arg(long, default_value_t = 5000)]
        jobs: usize,
        /// Workers (one connection each).
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Leases each worker holds at once (max_in_flight, 1..=256).
        #[arg(long, default_value_t = 8)]
        in_flight: u64,
        /// Publish every job before the workers join (a pending backlog).
        #[arg(long)]
        prefill: bool,
    },
    /// S subscribers that never read while E large events are published: the relay's
    /// memory at rest, while they are connected, and after they left (issue 9).
    ///
    /// Example: axon bench slow-subscribers --spawn --subscribers 3 --events 5000
    SlowSubscribers {
        #[command(flatten)]
        target: TargetArgs,
        /// Subscribers that never read.
        #[arg(long, default_value_t = 3)]
        subscribers: usize,
        /// Events published while they do not read.
        #[arg(long, default_value_t = 5000)]
        events: usize,
        /// Content size of each event, in bytes.
        #[arg(long, default_value_t = 60_000)]
        content_bytes: usize,
        /// Seconds to wait after they left before reading the relay's memory.
        #[arg(long, default_value_t = 3.0)]
        settle_secs: f64,
    },
    /// The client side alone (sign, encode, decode+verify), no relay: shows the harness
    /// is not the bottleneck.
    ///
    /// Example: axon bench ceiling
    Ceiling {
        /// Events per measurement.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Content size in bytes.
        #[arg(long, default_value_t = 200)]
        content_bytes: usize,
        /// Repeat the scenario and print the median of every figure.
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
}

/// Which Axon relay to measure.
#[derive(Args, Clone)]
struct TargetArgs {
    /// Start `axon relay` (this binary) on 127.0.0.1:0 with a scratch database and a
    /// config allowing the benchmark's keys; stop it (SIGTERM) at the end.
    #[arg(long, conflicts_with = "url")]
    spawn: bool,
    /// Measure an existing relay at this ws:// address instead.
    #[arg(long, value_name = "WS_URL")]
    url: Option<String>,
    /// The relay_url that relay binds into AUTH (default: --url).
    #[arg(long, requires = "url")]
    relay_url: Option<String>,
    /// Secret key file of a key that relay allows (`axon keygen`); signs every event.
    #[arg(long, value_name = "FILE", requires = "url")]
    key: Option<PathBuf>,
    /// That relay's process id, to read its memory use from /proc.
    #[arg(long, requires = "url")]
    relay_pid: Option<u32>,
    /// The `axon` binary to spawn (default: this executable).
    #[arg(long, value_name = "PATH")]
    relay_bin: Option<PathBuf>,
    /// Where the spawned relay's scratch database goes (default: the system temp dir).
    #[arg(long, value_name = "DIR")]
    db_dir: Option<PathBuf>,
    /// Repeat the scenario and print the median of every figure.
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

/// The Nostr side of a side-by-side run.
#[derive(Args, Clone)]
struct NostrArgs {
    /// Also run the same scenario against this NIP-01 relay (needs the `nostr-bench`
    /// cargo feature): JSON frames, BIP-340 signatures, same sizes and shapes.
    #[arg(long, value_name = "WS_URL")]
    nostr: Option<String>,
}

impl TargetArgs {
    fn target(&self, nostr: Option<&String>) -> CliResult<Target> {
        if self.spawn {
            let relay_bin = match &self.relay_bin {
                Some(path) => path.clone(),
                None => std::env::current_exe().map_err(|error| format!("cannot find this executable: {error}"))?,
            };
            return Ok(Target::Spawn(SpawnConfig { relay_bin, db_dir: self.db_dir.clone() }));
        }
        if let Some(url) = &self.url {
            let key_path = self.key.as_ref().ok_or("--url needs --key FILE (a key the relay allows)")?;
            return Ok(Target::Url {
                url: url.clone(),
                relay_url: self.relay_url.clone().unwrap_or_else(|| url.clone()),
                key: Box::new(super::keys::read_key_file(key_path)?),
                pid: self.relay_pid,
            });
        }
        if nostr.is_some() {
            return Ok(Target::Nothing);
        }
        Err("give --spawn (start a relay) or --url ws://... --key FILE (an existing relay)".into())
    }
}

#[cfg(not(feature = "nostr-bench"))]
fn check_nostr(nostr: &NostrArgs) -> CliResult<()> {
    match nostr.nostr {
        Some(_) => Err("--nostr needs the nostr-bench feature: cargo build --release --features nostr-bench".into()),
        None => Ok(()),
    }
}

#[cfg(feature = "nostr-bench")]
fn check_nostr(_nostr: &NostrArgs) -> CliResult<()> {
    Ok(())
}

/// Runs a benchmark scenario.
pub fn run(args: BenchArgs) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(scenario(args.scenario))
}

async fn scenario(scenario: Scenario) -> CliResult<()> {
    match scenario {
        Scenario::Ingest { target, nostr, events, connections, in_flight, content_bytes, invalid_signatures } => {
            check_nostr(&nostr)?;
            let axon = target.target(nostr.nostr.as_ref())?;
            let params = IngestParams {
                events,
                connections: connections.max(1),
                in_flight: in_flight.max(1),
                content_bytes,
                invalid_signatures,
            };
            repeat(target.runs, async |_| {
                let mut reports: RunReports = Vec::new();
                if axon.is_some() {
                    reports.push(("axon", crate::bench::ingest::run(&axon, &params).await?));
                }
                #[cfg(feature = "nostr-bench")]
                if let Some(url) = &nostr.nostr {
                    reports.push(("nostr", crate::bench::nostr::ingest(url, &params).await?));
                }
                Ok(reports)
            })
            .await
        }
        Scenario::Fanout {
            target,
            nostr,
            subscribers,
            subscriber_connections,
            publishers,
            rate,
            duration,
            content_bytes,
        } => {
            check_nostr(&nostr)?;
            let axon = target.target(nostr.nostr.as_ref())?;
            if rate <= 0.0 || duration <= 0.0 {
                return Err("--rate and --duration must be positive".into());
            }
            let params = FanoutParams {
                subscribers: subscribers.max(1),
                subscriber_connections: subscriber_connections.unwrap_or(subscribers.div_ceil(20)).max(1),
                publishers: publishers.max(1),
                rate,
                duration,
                content_bytes: content_bytes.max(16),
            };
            repeat(target.runs, async |_| {
                let mut reports: RunReports = Vec::new();
                if axon.is_some() {
                    reports.push(("axon", crate::bench::fanout::run(&axon, &params).await?));
                }
                #[cfg(feature = "nostr-bench")]
                if let Some(url) = &nostr.nostr {
                    reports.push(("nostr", crate::bench::nostr::fanout(url, &params).await?));
                }
                Ok(reports)
            })
            .await
        }
        Scenario::Query {
            target,
            nostr,
            prefill,
            queries,
            replays,
            replay_events,
            connections,
            limit,
            content_bytes,
        } => {
            check_nostr(&nostr)?;
            let axon = target.target(nostr.nostr.as_ref())?;
            let params = QueryParams {
                prefill: prefill as usize,
                queries: queries.max(1),
                replays: replays.max(1),
                replay_events: replay_events.min(prefill as usize),
                connections: connections.max(1),
                content_bytes,
                limit,
            };
            let session = match axon.is_some() {
                true => Some(crate::bench::query::prepare(&axon, &params).await?),
                false => None,
            };
            #[cfg(feature = "nostr-bench")]
            let nostr_session = match &nostr.nostr {
                Some(url) => Some(crate::bench::nostr::prepare_query(url, &params).await?),
                None => None,
            };
            let result = repeat(target.runs, async |_| {
                let mut reports: RunReports = Vec::new();
                if let Some(session) = &session {
                    reports.push(("axon", session.run(&params).await?));
                }
                #[cfg(feature = "nostr-bench")]
                if let Some(session) = &nostr_session {
                    reports.push(("nostr", session.run(&params).await?));
                }
                Ok(reports)
            })
            .await;
            if let Some(session) = session {
                session.finish().await?;
            }
            result
        }
        Scenario::Connections { target, count, parallel, keys } => {
            let axon = target.target(None)?;
            let params = ConnectionsParams { count, parallel, keys };
            repeat(target.runs, async |_| Ok(vec![("axon", crate::bench::connections::run(&axon, &params).await?)]))
                .await
        }
        Scenario::Jobs { target, jobs, workers, in_flight, prefill } => {
            let axon = target.target(None)?;
            let params = JobsParams { jobs, workers: workers.max(1), in_flight: in_flight.clamp(1, 256), prefill };
            repeat(target.runs, async |_| Ok(vec![("axon", crate::bench::jobs::run(&axon, &params).await?)])).await
        }
        Scenario::SlowSubscribers { target, subscribers, events, content_bytes, settle_secs } => {
            let axon = target.target(None)?;
            let params = SlowParams { subscribers: subscribers.max(1), events, content_bytes, settle_secs };
            repeat(target.runs, async |_| Ok(vec![("axon", crate::bench::slow::run(&axon, &params).await?)])).await
        }
        Scenario::Ceiling { events, content_bytes, runs } => {
            let params = CeilingParams { events, content_bytes };
            repeat(runs, async |_| {
                let params = params.clone();
                let report = tokio::task::spawn_blocking(move || crate::bench::ceiling::run(&params))
                    .await
                    .map_err(|error| format!("the ceiling run failed: {error}"))??;
                Ok(vec![("client", report)])
            })
            .await
        }
    }
}
