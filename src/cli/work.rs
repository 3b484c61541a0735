//! `axon work` (a queue worker running a command per job) and `axon request` (publish a
//! job, wait for its first result): spec §14 for shell scripts.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::common::{parse_duration, with_reply_timeout, ConnectArgs};
use super::{CliError, CliResult};
use crate::client::{retry_delay, Client, QueueItem, SubItem};
use crate::clock::unix_now;
use crate::protocol::error::codes;
use crate::protocol::filter::TagFilter;
use crate::protocol::{Event, EventId, Filter, Tag};

/// The queue subscription's id on the worker's connection.
const SUB_ID: &str = "work";
/// Longest NACK delay after failures, in seconds.
const MAX_BACKOFF_SECS: u64 = 300;

/// Arguments of `axon work`.
#[derive(Args)]
pub struct WorkArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The queue (group) to join.
    #[arg(long)]
    pub group: String,
    /// Job request kinds to take, 5000..=5999 (repeatable).
    #[arg(long = "kind", required = true)]
    pub kinds: Vec<u16>,
    /// Jobs run at once (the subscription's max_in_flight).
    #[arg(long, default_value_t = 1)]
    pub concurrency: u64,
    /// Lease length; the lease is extended while the command runs.
    #[arg(long, default_value_t = 60)]
    pub lease_secs: u64,
    /// Exit after this many jobs were handled (completed or failed). Default: run on.
    #[arg(long)]
    pub max_jobs: Option<u64>,
    /// The command to run per job, after `--`: the job's content on its stdin, its
    /// stdout published as the result.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Arguments of `axon request`.
#[derive(Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The job request kind, 5000..=5999.
    #[arg(long, default_value_t = 5000)]
    pub kind: u16,
    /// How long to wait for the first result: 30s, 2m, ...
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The job's content.
    pub content: String,
}

/// What one job's command did.
enum Outcome {
    /// Exit 0: its stdout.
    Succeeded(Vec<u8>),
    /// Non-zero exit, or it could not run.
    Failed(String),
}

fn run_command(command: &[String], input: &[u8]) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome::Failed("no command".into());
    };
    let child = Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => return Outcome::Failed(format!("cannot run {program}: {error}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe; that is not a failure.
        let _ = stdin.write_all(input);
    }
    match child.wait_with_output() {
        Ok(output) if output.status.success() => Outcome::Succeeded(output.stdout),
        Ok(output) => Outcome::Failed(format!("{program} exited with {}", output.status)),
        Err(error) => Outcome::Failed(format!("{program}: {error}")),
    }
}

/// The result event: kind + 1000, an `e` tag naming the job.
fn result_event(key: &ed25519_dalek::SigningKey, job: &Event, content: Vec<u8>) -> Result<Event, CliError> {
    let kind = job.kind.saturating_add(1000);
    Ok(Event::sign(key, unix_now(), kind, content, vec![Tag::new("e", [hex::encode(job.id)])])?)
}

/// Runs the command for one job, extending the lease meanwhile; then publishes the
/// result with `ack`, or NACKs with an exponential backoff by attempt.
async fn handle_job(
    client: Arc<Client>,
    key: ed25519_dalek::SigningKey,
    job: Event,
    attempt: u64,
    args: Arc<WorkArgs>,
) -> CliResult {
    let (command, input) = (args.command.clone(), job.content.clone());
    let mut running = tokio::task::spawn_blocking(move || run_command(&command, &input));
    let period = Duration::from_secs((args.lease_secs / 2).max(1));
    let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let outcome = loop {
        tokio::select! {
            done = &mut running => break done.map_err(|error| format!("job task failed: {error}"))?,
            _ = extend.tick() => {
                if let Err(error) = client.extend(SUB_ID, job.id, None).await {
                    eprintln!("axon work: cannot extend the lease of {}: {error}", hex::encode(job.id));
                }
            }
        }
    };
    match outcome {
        Outcome::Succeeded(stdout) => complete(&client, &key, &job, stdout).await,
        Outcome::Failed(reason) => {
            let delay = 1u64.checked_shl(attempt.saturating_sub(1).min(16) as u32).unwrap_or(MAX_BACKOFF_SECS);
            let delay = delay.min(MAX_BACKOFF_SECS);
            eprintln!("axon work: job {} failed ({reason}); offered again in {delay} s", hex::encode(job.id));
            if let Err(error) = with_reply_timeout(client.nack(SUB_ID, job.id, Some(delay))).await {
                // The lease was lost meanwhile (e.g. the connection dropped): the relay
                // offers the job again by itself.
                eprintln!("axon work: NACK of {} not accepted: {error}", hex::encode(job.id));
            }
            Ok(())
        }
    }
}

async fn complete(client: &Client, key: &ed25519_dalek::SigningKey, job: &Event, stdout: Vec<u8>) -> CliResult {
    let result = result_event(key, job, stdout)?;
    match with_reply_timeout(client.publish_ack(&result, SUB_ID, job.id)).await {
        Ok(_) => {
            println!("{} {}", hex::encode(job.id), hex::encode(result.id));
            Ok(())
        }
        Err(error) => {
            // 409: the same result was stored before (a retry) — done. 412: the job went
            // to another worker; this result is dropped.
            eprintln!("axon work: result for {} not accepted: {error}", hex::encode(job.id));
            Ok(())
        }
    }
}

/// First wait before reconnecting; it doubles per failed attempt up to [`RECONNECT_MAX`].
const RECONNECT_START: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(60);

/// Why a worker's session on one connection ended.
enum SessionEnd {
    /// `--max-jobs` jobs were handled.
    Finished,
    /// The connection or the queue subscription was lost: reconnect (after the relay's
    /// hint, if it gave one).
    Lost(String, Option<Duration>),
}

/// `axon work`: joins the queue and runs the command once per job offered. When the
/// connection drops it reconnects with backoff (honouring the relay's retry hint) and
/// joins again; leases held on the lost connection are lost (the relay offers those jobs
/// again), so their commands' results are dropped.
pub async fn work(args: WorkArgs) -> CliResult {
    let key = args.connect.signing_key()?;
    // The first connection fails fast: a wrong URL or key is a mistake to report.
    let mut client = Some(Arc::new(args.connect.connect(&key).await?));
    let args = Arc::new(args);
    let mut running = tokio::task::JoinSet::new();
    let mut handled = 0u64;
    let mut backoff = RECONNECT_START;
    loop {
        let session = match client.take() {
            Some(client) => Ok(client),
            None => args.connect.try_connect(&key).await.map(Arc::new),
        };
        let (reason, hint) = match session {
            Ok(client) => match session_loop(&client, &key, &args, &mut running, &mut handled, &mut backoff).await? {
                SessionEnd::Finished => break,
                SessionEnd::Lost(reason, hint) => (reason, hint),
            },
            Err(error) => {
                let message = args.connect.connect_error(&error, &hex::encode(key.verifying_key().to_bytes()));
                if matches!(error.code(), Some(codes::AUTH_REQUIRED | codes::RESTRICTED)) {
                    return Err(message.into());
                }
                (message, error.retry_after())
            }
        };
        let delay = retry_delay(hint, backoff);
        eprintln!("axon work: {reason}; reconnecting in {:.1} s", delay.as_secs_f64());
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
    while let Some(done) = running.join_next().await {
        done.map_err(|error| format!("job task failed: {error}"))??;
    }
    Ok(())
}

/// Joins the queue on `client` and runs jobs until `--max-jobs` or the connection ends.
async fn session_loop(
    client: &Arc<Client>,
    key: &ed25519_dalek::SigningKey,
    args: &Arc<WorkArgs>,
    running: &mut tokio::task::JoinSet<CliResult>,
    handled: &mut u64,
    backoff: &mut Duration,
) -> Result<SessionEnd, CliError> {
    let filter = Filter { kinds: Some(args.kinds.clone()), ..Filter::default() };
    let joined = client.subscribe_queue(SUB_ID, &args.group, vec![filter], args.lease_secs, args.concurrency).await;
    let Ok(mut jobs) = joined else {
        return Ok(SessionEnd::Lost("the relay closed the connection".into(), None));
    };
    while args.max_jobs.is_none_or(|max| *handled < max) {
        tokio::select! {
            item = jobs.next() => match item {
                Some(QueueItem::Job { event, lease, .. }) => {
                    *backoff = RECONNECT_START;
                    running.spawn(handle_job(client.clone(), key.clone(), *event, lease.attempt, args.clone()));
                }
                Some(QueueItem::Ended(error)) if error.code == codes::UNAVAILABLE => {
                    let hint = error.retry_after_ms.map(Duration::from_millis);
                    return Ok(SessionEnd::Lost(format!("the relay ended the queue subscription: {}", error.message), hint));
                }
                Some(QueueItem::Ended(error)) => {
                    return Err(format!("the relay ended the queue subscription: {} {}", error.code, error.message).into())
                }
                None => return Ok(SessionEnd::Lost("the connection to the relay was lost".into(), None)),
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                done.map_err(|error| format!("job task failed: {error}"))??;
                *handled += 1;
            }
        }
    }
    Ok(SessionEnd::Finished)
}

/// `axon request`: publishes a job and prints the content of its first result.
pub async fn request(args: RequestArgs) -> CliResult {
    let key = args.connect.signing_key()?;
    let client = args.connect.connect(&key).await?;
    let job = Event::sign(&key, unix_now(), args.kind, args.content.into_bytes(), Vec::new())?;
    let mut results = client.subscribe("request", vec![results_filter(args.kind, job.id)], None).await?;
    with_reply_timeout(client.publish(&job)).await?;
    let wait = async {
        while let Some(item) = results.next().await {
            match item {
                SubItem::Event { event, .. } => return Ok(event.content),
                SubItem::Eose => continue,
                SubItem::Ended(error) => return Err(CliError::from(error.message)),
            }
        }
        Err("the relay closed the connection".into())
    };
    let content = tokio::time::timeout(args.timeout, wait)
        .await
        .map_err(|_| format!("no result within {} s", args.timeout.as_secs()))??;
    std::io::stdout().write_all(&content)?;
    Ok(())
}

fn results_filter(kind: u16, job: EventId) -> Filter {
    Filter {
        kinds: Some(vec![kind.saturating_add(1000)]),
        tags: Some(vec![TagFilter { name: "e".into(), values: vec![hex::encode(job)] }]),
        ..Filter::default()
    }
}
