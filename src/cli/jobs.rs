//! `axon jobs`: the operator view of the job queues (spec §14), read from the relay's
//! database file: each group with its done and dead counts, then every dead job.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, CliResult};
use crate::relay::config::RelayConfig;
use crate::relay::store::sqlite::jobs_report;

/// Arguments of `axon jobs`.
#[derive(Args)]
pub struct JobsArgs {
    /// The relay's database file.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub db: Option<PathBuf>,
    /// Take the database path from this relay.yaml (default: ./relay.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn database(args: &JobsArgs) -> Result<PathBuf, CliError> {
    if let Some(db) = &args.db {
        return Ok(db.clone());
    }
    let config = args.config.clone().unwrap_or_else(|| PathBuf::from("relay.yaml"));
    let loaded = RelayConfig::load(&config).map_err(|error| format!("{error} (or give the database with --db)"))?;
    Ok(loaded.db)
}

/// Prints `group NAME start START done N dead N` per group, then
/// `dead GROUP SEQ ID attempts N` per dead job.
pub fn jobs(args: JobsArgs) -> CliResult {
    let path = database(&args)?;
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
