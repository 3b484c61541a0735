//! `axon backup`: a consistent online copy of a running relay's SQLite database.
//!
//! The copy uses SQLite's backup API inside one read transaction on the source, so it
//! is a single snapshot (WAL mode lets the relay keep committing meanwhile) and the
//! backup never restarts because of concurrent writes. The result is written next to
//! the destination, switched to a self-contained rollback journal, checked with
//! `PRAGMA integrity_check` and only then renamed into place.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::CliResult;
use crate::relay::config::RelayConfig;

/// Pages copied per backup step (between progress updates).
const PAGES_PER_STEP: i32 = 1024;

/// Arguments of `axon backup`.
#[derive(Args)]
pub struct BackupArgs {
    /// Where to write the backup.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The relay's database file.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub db: Option<PathBuf>,
    /// Take the database path (`db`) from this relay.yaml (the default when --db is not
    /// given: ./relay.yaml). A relative `db` is taken relative to the current directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

type BackupError = Box<dyn std::error::Error + Send + Sync>;

fn source_path(args: &BackupArgs) -> Result<PathBuf, BackupError> {
    if let Some(db) = &args.db {
        return Ok(db.clone());
    }
    let config = args.config.clone().unwrap_or_else(|| PathBuf::from("relay.yaml"));
    let loaded = RelayConfig::load(&config).map_err(|error| format!("{error} (or give the database with --db)"))?;
    Ok(loaded.db)
}

/// Copies every page of `source` into `destination`, reporting progress.
fn copy(source: &Connection, destination: &mut Connection) -> Result<i32, BackupError> {
    let backup = Backup::new(source, destination)?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("backup {elapsed_precise} [{wide_bar}] {pos}/{len} pages") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let mut last_line = Instant::now();
    loop {
        let step = backup.step(PAGES_PER_STEP)?;
        let progress = backup.progress();
        let done = progress.pagecount - progress.remaining;
        match &bar {
            Some(bar) => {
                bar.set_length(progress.pagecount.max(0) as u64);
                bar.set_position(done.max(0) as u64);
            }
            None if last_line.elapsed() >= Duration::from_secs(2) => {
                last_line = Instant::now();
                eprintln!("backup: {done}/{} pages", progress.pagecount);
            }
            None => {}
        }
        match step {
            StepResult::Done => {
                if let Some(bar) = &bar {
                    bar.finish();
                }
                return Ok(progress.pagecount);
            }
            StepResult::More => {}
            // The relay holds a lock for a moment (a checkpoint): wait and go on.
            StepResult::Busy | StepResult::Locked => std::thread::sleep(Duration::from_millis(20)),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `PRAGMA integrity_check`: `Ok(())` when it answers exactly "ok".
fn integrity_check(connection: &Connection) -> Result<(), String> {
    let problems = (|| -> rusqlite::Result<Vec<String>> {
        let mut statement = connection.prepare("PRAGMA integrity_check")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        rows.collect()
    })()
    .map_err(|error| format!("integrity_check failed to run: {error}"))?;
    if problems == ["ok"] {
        Ok(())
    } else {
        Err(format!("integrity_check: {}", problems.join("; ")))
    }
}

/// Where the copy is written before it is checked and renamed.
fn partial_path(destination: &Path) -> PathBuf {
    let mut name = destination.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    destination.with_file_name(name)
}

/// `axon backup`.
pub fn backup(args: BackupArgs) -> CliResult {
    let source_path = source_path(&args)?;
    if !source_path.is_file() {
        return Err(format!(
            "no database file at {} (give the relay's database with --db, or its relay.yaml with --config)",
            source_path.display()
        )
        .into());
    }
    if args.file.exists() && !args.force {
        return Err(format!("{} already exists (use --force to replace it)", args.file.display()).into());
    }
    let partial = partial_path(&args.file);
    let _ = std::fs::remove_file(&partial);
    let started = Instant::now();

    // Never create: a wrong path must not leave an empty database behind.
    let source =
        Connection::open_with_flags(&source_path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|error| format!("cannot open {}: {error}", source_path.display()))?;
    source.busy_timeout(Duration::from_secs(10))?;
    // One read transaction for the whole copy: a single consistent snapshot.
    source
        .execute_batch("BEGIN DEFERRED")
        .map_err(|error| format!("cannot read {}: {error}", source_path.display()))?;
    source
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get::<_, i64>(0))
        .map_err(|error| format!("{} is not a readable SQLite database: {error}", source_path.display()))?;
    let mut destination =
        Connection::open(&partial).map_err(|error| format!("cannot create {}: {error}", partial.display()))?;
    let copied = copy(&source, &mut destination);
    let _ = source.execute_batch("COMMIT");
    drop(source);
    let pages = match copied {
        Ok(pages) => pages,
        Err(error) => {
            drop(destination);
            let _ = std::fs::remove_file(&partial);
            return Err(format!("backup of {} failed: {error}", source_path.display()).into());
        }
    };

    // A self-contained file: no -wal/-shm beside it.
    destination
        .pragma_update(None, "journal_mode", "DELETE")
        .map_err(|error| format!("cannot finish {}: {error}", partial.display()))?;
    if let Err(problem) = integrity_check(&destination) {
        return Err(format!("the backup in {} is damaged: {problem}", partial.display()).into());
    }
    let events = destination
        .query_row("SELECT count(*), coalesce(max(seq), 0) FROM events", [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
        .ok();
    drop(destination);
    std::fs::rename(&partial, &args.file)
        .map_err(|error| format!("cannot move {} to {}: {error}", partial.display(), args.file.display()))?;
    let contents = match events {
        Some((count, seq)) => format!("{count} events up to seq {seq}"),
        None => "no events table: is this an Axon database?".to_owned(),
    };
    let line = format!(
        "backed up {} to {} ({pages} pages, {contents}) in {:.1} s; integrity_check: ok",
        source_path.display(),
        args.file.display(),
        started.elapsed().as_secs_f64()
    );
    let mut out = super::tools::Output::new(true);
    match out.line(&line) {
        Ok(()) => Ok(()),
        Err(error) => error.into_result(),
    }
}
