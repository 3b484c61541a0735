//! Client subcommands: publish, req, allow, revoke, allowlist, export, import, backup.

use clap::Subcommand;

use super::CliResult;

/// The client-side subcommands.
#[derive(Subcommand)]
pub enum ToolCommand {}

/// Runs a client subcommand.
pub fn run(command: ToolCommand) -> CliResult {
    match command {}
}
