//! `axon mirror status`: each upstream's state as the relay's info document shows it
//! (spec §17), read over HTTP from the relay's port.

use clap::{Args, Subcommand};

use super::CliResult;
use crate::relay::mirror::info;

/// `axon mirror ...`
#[derive(Args, Debug)]
pub struct MirrorArgs {
    #[command(subcommand)]
    command: MirrorCommand,
}

#[derive(Subcommand, Debug)]
enum MirrorCommand {
    /// Show each upstream: connected, last upstream seq stored, lag, events copied,
    /// skipped events by reason and errors by code.
    ///
    /// Reads the relay's info document (GET / with Accept: application/json) from the
    /// same host and path as --url (ws → http).
    ///
    /// Example: axon mirror status --url ws://127.0.0.1:8080
    Status {
        /// The relay's WebSocket URL (or its http:// URL).
        #[arg(long, env = "AXON_URL", default_value = "ws://127.0.0.1:8080")]
        url: String,
        /// Print the info document's `mirrors` list as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `axon mirror`.
pub fn run(args: MirrorArgs) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.command {
        MirrorCommand::Status { url, json } => runtime.block_on(status(&url, json)),
    }
}

async fn status(url: &str, json: bool) -> CliResult {
    let ws_url = match url.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}"),
        None => url.to_owned(),
    };
    let document = info::fetch_document(&ws_url).await.map_err(|error| format!("{url}: {error}"))?;
    let mirrors = document.get("mirrors").cloned().unwrap_or_else(|| serde_json::json!([]));
    if json {
        println!("{mirrors}");
        return Ok(());
    }
    let rows = mirrors.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no mirrors configured");
        return Ok(());
    }
    for row in rows {
        println!("{}", line(&row));
    }
    Ok(())
}

/// One upstream as one line of `key=value` pairs.
fn line(row: &serde_json::Value) -> String {
    let field = |name: &str| row.get(name).map(|value| value.to_string()).unwrap_or_else(|| "?".into());
    let url = row.get("url").and_then(|value| value.as_str()).unwrap_or("?");
    format!(
        "{url} connected={} last_seq={} lag_events={} lag_seconds={} copied={} skipped={} errors={}",
        field("connected"),
        field("last_seq"),
        field("lag_events"),
        field("lag_seconds"),
        field("events_copied"),
        field("skipped"),
        field("errors"),
    )
}
