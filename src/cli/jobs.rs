//! `axon jobs`: the operator view of the job queues (spec §14), read from the relay's
//! database file: each group with its done and dead counts, then every dead job; and
//! `axon jobs requeue`, which publishes a signed REQUEUE (kind 9002) per dead job.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::{publish_error_message, ConnectArgs};
use super::publish::{publish_event, Published};
use super::{CliError, CliResult};
use crate::client::{Client, ClientError};
use crate::clock::unix_now;
use crate::protocol::error::codes;
use crate::protocol::frame::MAX_GROUP_BYTES;
use crate::protocol::kind::KIND_REQUEUE;
use crate::protocol::tags::{parse_p_value, E, GROUP};
use crate::protocol::{Event, EventId, Tag};
use crate::relay::config::RelayConfig;
use crate::relay::store::sqlite::jobs_report;

/// Arguments of `axon jobs`.
#[derive(Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub action: Option<JobsAction>,
}

/// Where the relay's database file is.
#[derive(Args)]
pub struct DatabaseArgs {
    /// The relay's database file.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub db: Option<PathBuf>,
    /// Take the database path from this relay.yaml (default: ./relay.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// What `axon jobs` does besides listing.
#[derive(Subcommand)]
pub enum JobsAction {
    /// Re-queue dead jobs of a group: each starts over with no attempts and is offered
    /// again. Publishes one signed REQUEUE event (kind 9002) per job; admins only.
    ///
    /// Example: axon jobs requeue --group summarizers --key admin.key 3f9a…e1
    /// Example: axon jobs requeue --group summarizers --all --config relay.yaml
    Requeue(RequeueArgs),
}

/// Arguments of `axon jobs requeue`.
#[derive(Args)]
pub struct RequeueArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The group the jobs died in.
    #[arg(long)]
    pub group: String,
    /// Job ids (64 hex characters each), as `axon jobs` lists them.
    #[arg(value_name = "JOB", value_parser = parse_job_id, required_unless_present = "all", conflicts_with = "all")]
    pub jobs: Vec<EventId>,
    /// Every dead job of the group, read from the relay's database (--db or --config).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

fn parse_job_id(text: &str) -> Result<EventId, String> {
    parse_p_value(&text.to_ascii_lowercase()).ok_or_else(|| format!("{text:?} is not a job id (64 hex characters)"))
}

/// `axon jobs` and its subcommands.
pub fn run(args: JobsArgs) -> CliResult {
    match args.action {
        None => jobs(&args.database),
        Some(JobsAction::Requeue(requeue_args)) => super::tools::block_on(requeue(requeue_args)),
    }
}

fn database(args: &DatabaseArgs) -> Result<PathBuf, CliError> {
    if let Some(db) = &args.db {
        return Ok(db.clone());
    }
    let config = args.config.clone().unwrap_or_else(|| PathBuf::from("relay.yaml"));
    let loaded = RelayConfig::load(&config).map_err(|error| format!("{error} (or give the database with --db)"))?;
    Ok(loaded.db)
}

/// Prints `group NAME start START done N dead N` per group, then
/// `dead GROUP SEQ ID attempts N` per dead job.
pub fn jobs(args: &DatabaseArgs) -> CliResult {
    let path = database(args)?;
    let (groups, dead) = jobs_report(&path).map_err(|error| format!("{}: {error}", path.display()))?;
    for group in groups {
        println!("group {} start {} done {} dead {}", group.name, group.start_seq, group.done, group.dead);
    }
    for job in dead {
        let id = job.id.map_or_else(|| "-".to_owned(), hex::encode);
        println!("dead {} {} {} attempts {}", job.group, job.job_seq, id, job.attempts);
    }
    Ok(())
}

/// The dead jobs of `group` in the database, oldest first.
fn dead_jobs(database_args: &DatabaseArgs, group: &str) -> Result<Vec<EventId>, CliError> {
    let path = database(database_args)?;
    let (_, dead) = jobs_report(&path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut missing = 0;
    let mut ids = Vec::new();
    for job in dead.into_iter().filter(|job| job.group == group) {
        match job.id.as_deref().and_then(|id| EventId::try_from(id).ok()) {
            Some(id) => ids.push(id),
            None => missing += 1,
        }
    }
    if missing > 0 {
        eprintln!("note: {missing} dead job(s) of group {group:?} are no longer stored and cannot be re-queued");
    }
    Ok(ids)
}

/// One REQUEUE event for `job` in `group`. The content (the time in milliseconds) keeps
/// two re-queues of one job within a second from having one id, which would make the
/// second a duplicate (409, success) that re-queues nothing.
fn requeue_event(key: &ed25519_dalek::SigningKey, group: &str, job: &EventId) -> Result<Event, CliError> {
    let tags = vec![Tag::new(GROUP, [group]), Tag::new(E, [hex::encode(job)])];
    let content = format!("requeued at {} ms", crate::relay::jobs::now_ms()).into_bytes();
    Event::sign(key, unix_now(), KIND_REQUEUE, content, tags)
        .map_err(|error| format!("cannot build the REQUEUE event: {}", error.message()).into())
}

/// Publishes one REQUEUE; `Ok(seq)` or a sentence saying why the job was not re-queued.
async fn requeue_one(client: &Client, event: &Event, group: &str, job: &EventId) -> Result<Option<u64>, String> {
    match publish_event(client, event).await {
        Ok(Published::New(seq) | Published::Duplicate(seq)) => Ok(seq),
        Err(ClientError::Rejected { code: codes::RESTRICTED, message, .. }) => {
            Err(format!("only keys listed under `admins` in relay.yaml can re-queue jobs (403: {message})"))
        }
        Err(ClientError::Rejected { code: codes::DUPLICATE, message, .. }) => Err(message),
        Err(ClientError::Rejected { code, message, .. }) => {
            Err(format!("job {} of group {group:?}: {}", hex::encode(job), publish_error_message(code, &message)))
        }
        Err(ClientError::Closed) => Err("the relay closed the connection before answering".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// `axon jobs requeue`: prints `requeued GROUP JOB SEQ` per job re-queued; fails if any
/// job was not.
pub async fn requeue(args: RequeueArgs) -> CliResult {
    if args.group.is_empty() || args.group.len() > MAX_GROUP_BYTES {
        return Err(format!("--group must be 1..={MAX_GROUP_BYTES} bytes").into());
    }
    let jobs = if args.all { dead_jobs(&args.database, &args.group)? } else { args.jobs.clone() };
    if jobs.is_empty() {
        eprintln!("no dead jobs in group {:?}: nothing to re-queue", args.group);
        return Ok(());
    }
    let key = args.connect.signing_key()?;
    let client = args.connect.connect(&key).await?;
    let mut failed = 0;
    for job in &jobs {
        let event = requeue_event(&key, &args.group, job)?;
        match requeue_one(&client, &event, &args.group, job).await {
            Ok(seq) => {
                let seq = seq.map_or_else(|| "-".to_owned(), |seq| seq.to_string());
                println!("requeued {} {} {seq}", args.group, hex::encode(job));
            }
            Err(reason) => {
                eprintln!("not requeued: {reason}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {} job(s) not re-queued", jobs.len()).into());
    }
    Ok(())
}
