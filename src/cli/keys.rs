//! Secret key files: `axon keygen`, and loading a key for the client commands.
//!
//! A key file holds the 32-byte Ed25519 seed as 64 hex characters and a newline, and is
//! created readable only by its owner.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use ed25519_dalek::SigningKey;

use super::CliResult;

/// Arguments of `axon keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (refuses to overwrite an existing file).
    #[arg(long, default_value = "axon.key")]
    pub out: PathBuf,
}

/// `axon keygen`: writes a new secret key file and prints the public key.
pub fn keygen(args: KeygenArgs) -> CliResult {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_key_file(&args.out, &key)?;
    eprintln!("wrote secret key to {} (mode 0600)", args.out.display());
    println!("{}", hex::encode(key.verifying_key().to_bytes()));
    Ok(())
}

/// Creates `path` with mode 0600 and writes the key's seed in hex.
pub fn write_key_file(path: &Path, key: &SigningKey) -> CliResult {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|error| format!("cannot create key file {}: {error}", path.display()))?;
    writeln!(file, "{}", hex::encode(key.to_bytes()))?;
    Ok(())
}

/// Reads a key file written by [`write_key_file`].
pub fn read_key_file(path: &Path) -> Result<SigningKey, Box<dyn std::error::Error + Send + Sync>> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read key file {}: {error}", path.display()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .map_err(|_| format!("key file {} must hold 64 hex characters", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}
