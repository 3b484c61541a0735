//! Subcommands of the `axon` binary. Each returns a [`CliResult`]; `main` prints errors.

pub mod admin;
pub mod backup;
pub mod bench;
pub mod cluster;
pub mod common;
pub mod dm;
pub mod import;
pub mod jobs;
pub mod keys;
pub mod mirror;
pub mod publish;
pub mod query;
pub mod relay;
pub mod tools;
pub mod work;

use std::path::Path;

/// Any error a subcommand reports: printed by `main`, exit status 1.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// The result of a subcommand (or of a step of one): any error is printed and exits
/// non-zero. The one error alias of the CLI and the benchmark.
pub type CliResult<T = ()> = Result<T, CliError>;

/// `axon vectors DIR`: writes the spec §13 test vectors.
pub fn write_vectors(dir: &Path) -> CliResult {
    std::fs::create_dir_all(dir)?;
    for (name, text) in [
        ("valid.json", crate::protocol::vectors::valid_json()),
        ("invalid.json", crate::protocol::vectors::invalid_json()),
        ("signatures.json", crate::protocol::vectors::signatures_json()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
