//! `axon backup`: a consistent online copy of a running relay's database, through the
//! storage module ([`crate::relay::store::sqlite::backup_file`]): one snapshot while the
//! relay keeps committing, written next to the destination, checked with
//! `PRAGMA integrity_check`, and only then renamed into place.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{CliError, CliResult};
use crate::relay::config::RelayConfig;
use crate::relay::store::sqlite::backup_file;
use crate::relay::store::BackupProgress;

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

fn source_path(args: &BackupArgs) -> Result<PathBuf, CliError> {
    if let Some(db) = &args.db {
        return Ok(db.clone());
    }
    let config = args.config.clone().unwrap_or_else(|| PathBuf::from("relay.yaml"));
    let loaded = RelayConfig::load(&config).map_err(|error| format!("{error} (or give the database with --db)"))?;
    Ok(loaded.db)
}

/// Reports backup progress: a bar on a terminal, else a line every 2 s on stderr.
fn progress_reporter() -> impl FnMut(BackupProgress) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("backup {elapsed_precise} [{wide_bar}] {pos}/{len} pages") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let mut last_line = Instant::now();
    move |progress: BackupProgress| match &bar {
        Some(bar) => {
            bar.set_length(progress.total);
            bar.set_position(progress.done);
            if progress.done >= progress.total {
                bar.finish();
            }
        }
        None if last_line.elapsed() >= Duration::from_secs(2) => {
            last_line = Instant::now();
            eprintln!("backup: {}/{} pages", progress.done, progress.total);
        }
        None => {}
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

    // Never creates the source: a wrong path must not leave an empty database behind.
    let report = match backup_file(&source_path, &partial, &mut progress_reporter()) {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error.to_string().into());
        }
    };
    let (pages, events) = (report.pages, report.events);
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
    let mut out = super::common::Output::new(true);
    match out.line(&line) {
        Ok(()) => Ok(()),
        Err(error) => error.into_result(),
    }
}
