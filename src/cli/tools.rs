//! The client subcommands' dispatcher: the subcommand enum and `run`. The commands live
//! in [`super::publish`], [`super::admin`], [`super::query`], [`super::import`] and
//! [`super::backup`]; what they share is in [`super::common`], not here, so no command
//! imports back from its dispatcher.

use std::future::Future;

use clap::Subcommand;

use super::CliResult;

/// The client-side subcommands.
#[derive(Subcommand)]
pub enum ToolCommand {
    /// Sign an event with your key and publish it; prints its id (hex) and seq.
    ///
    /// Content comes from the CONTENT argument, from --file, or from standard input
    /// when CONTENT is `-`; with none of them the content is empty. Each --tag adds one
    /// tag with one value, split at the first '=' (`--tag url=https://x/?a=b` gives the
    /// value `https://x/?a=b`); `--tag name` without '=' adds a tag with no values.
    /// Publishing an event the relay already stores (409) counts as success.
    ///
    /// Example: axon publish --kind 1000 --tag topic=weather --expires-in 1h "rain at noon"
    Publish(super::publish::PublishArgs),
    /// Query stored events (and with --stream, follow live ones) as JSON lines.
    ///
    /// Each line: {"id", "pubkey", "created_at", "kind", "tags": [[name, values...]],
    /// "content", "content_encoding": "utf8"|"base64", "seq"}. Without --stream the
    /// command exits after the stored events (EOSE). With --stream it keeps printing live
    /// events and, when the connection drops or the relay ends the subscription with an
    /// overflow, reconnects with exponential backoff (1 s doubling to 30 s) and resumes
    /// after the last seq it printed, so nothing is missed or printed twice.
    ///
    /// Example: axon req --kind 1000 --tag topic=weather --since 2h --limit 20
    ///
    /// Example: axon req --author 3b6a27bc --stream
    Req(super::query::ReqArgs),
    /// Allow keys to connect and publish (admins only): publishes a kind 9000 event.
    ///
    /// The change applies at once and persists across relay restarts.
    ///
    /// Example: axon allow 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29
    Allow(super::admin::AdminArgs),
    /// Revoke keys (admins only): publishes a kind 9001 event.
    ///
    /// The relay closes the revoked keys' open connections at once.
    /// Keys listed in relay.yaml (admins and allowlist) cannot be revoked at run time
    /// (the relay answers 409); remove them from relay.yaml and send the relay SIGHUP.
    ///
    /// Example: axon revoke 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29
    Revoke(super::admin::AdminArgs),
    /// Print the keys allowed at run time, one per line (admins only).
    ///
    /// The list is computed from the relay's admin log: every ALLOW (9000) and REVOKE
    /// (9001) event, replayed in seq order. Keys allowed in relay.yaml (admins, allowlist,
    /// `axon relay --allow`) are not in the log and are not printed.
    ///
    /// Example: axon allowlist --log
    Allowlist(super::admin::AllowlistArgs),
    /// Write matching stored events as a raw MessagePack stream, oldest first.
    ///
    /// The stream (events concatenated, each as the relay stores it) goes to standard
    /// output or --out, and is what `axon import` reads. Takes the same filter flags as `axon req` (no --limit: every match is exported).
    /// Only events your key may see are exported (DMs and admin events are restricted).
    ///
    /// Example: axon export --kind 1000 > events.axon
    Export(super::query::ExportArgs),
    /// Publish every event of an `axon export` stream, verifying each one first.
    ///
    /// Invalid events are reported and skipped; events the relay already stores count
    /// as duplicates. Shows progress on stderr and prints a summary. Exits non-zero if
    /// any event was invalid or rejected.
    ///
    /// Example: axon import events.axon
    Import(super::import::ImportArgs),
    /// Copy a running relay's SQLite database with SQLite's online backup.
    ///
    /// Writes FILE, then checks it with `PRAGMA integrity_check`. The copy is one consistent snapshot: every event acknowledged before the backup
    /// started is in it. Run it on the relay's machine (it reads the database file).
    ///
    /// Example: axon backup /var/backups/axon-$(date +%F).db --config /etc/axon/relay.yaml
    Backup(super::backup::BackupArgs),
    /// Work on a job queue (spec §14): run COMMAND once per job of the group.
    ///
    /// The job's content goes to COMMAND's stdin; its stdout is published as the result
    /// (kind = request kind + 1000, an `e` tag naming the job) together with the job's
    /// completion. A non-zero exit gives the job back (NACK) with an exponential
    /// backoff. The lease is extended while COMMAND runs. Prints "JOB_ID RESULT_ID" per
    /// completed job.
    ///
    /// Example: axon work --group summarize --kind 5000 --concurrency 4 -- ./summarize.sh
    Work(super::work::WorkArgs),
    /// Publish a job request and print the content of its first result.
    ///
    /// Example: axon request --kind 5000 "summarize https://example.com" --timeout 30s
    Request(super::work::RequestArgs),
    /// The job queues (spec §14) from the relay's database: each group's done and dead
    /// counts, then every dead job (pending and leased counts are in /metrics);
    /// `axon jobs requeue` re-queues dead jobs.
    ///
    /// Reads the database file read-only; run it on the relay's machine.
    ///
    /// Example: axon jobs --config /etc/axon/relay.yaml
    Jobs(super::jobs::JobsArgs),
}

/// Runs a client subcommand.
pub fn run(command: ToolCommand) -> CliResult {
    match command {
        ToolCommand::Publish(args) => block_on(super::publish::publish(args)),
        ToolCommand::Req(args) => block_on(super::query::req(args)),
        ToolCommand::Allow(args) => block_on(super::admin::admin(args, true)),
        ToolCommand::Revoke(args) => block_on(super::admin::admin(args, false)),
        ToolCommand::Allowlist(args) => block_on(super::admin::allowlist(args)),
        ToolCommand::Export(args) => block_on(super::query::export(args)),
        ToolCommand::Import(args) => block_on(super::import::import(args)),
        ToolCommand::Backup(args) => super::backup::backup(args),
        ToolCommand::Work(args) => block_on(super::work::work(args)),
        ToolCommand::Request(args) => block_on(super::work::request(args)),
        ToolCommand::Jobs(args) => super::jobs::run(args),
    }
}

/// Runs a command's future on a current-thread runtime.
pub(super) fn block_on(future: impl Future<Output = CliResult>) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(future)
}
