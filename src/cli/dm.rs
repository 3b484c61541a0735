//! `axon dm seal` and `axon dm open`: direct-message encryption (spec §12) from the
//! command line, so that other implementations (the Python client's tests) can check
//! that they interoperate with [`crate::protocol::dm`] byte for byte.
//!
//! `seal` prints the DM event content (nonce || ciphertext) as hex; `open` reads that hex
//! and writes the plaintext bytes unchanged to standard output.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::parse_pubkey;
use super::keys::read_key_file;
use super::CliResult;
use crate::protocol::{dm, PublicKey};

/// Arguments of `axon dm`.
#[derive(Args)]
pub struct DmArgs {
    #[command(subcommand)]
    command: DmCommand,
}

#[derive(Subcommand)]
enum DmCommand {
    /// Encrypt a message to the --to key; prints the DM content (hex).
    ///
    /// Example: echo -n secret | axon dm seal --key alice.key --to <bob hex> -
    Seal {
        /// Your secret key file (the sender).
        #[arg(long, default_value = "axon.key")]
        key: PathBuf,
        /// The recipient's public key (64 hex characters).
        #[arg(long, value_parser = parse_pubkey)]
        to: PublicKey,
        /// The plaintext; `-` reads standard input.
        plaintext: String,
    },
    /// Decrypt DM content (hex); writes the plaintext to standard output.
    ///
    /// Your key is either party's. Example: axon dm open --key bob.key --from <alice> --to <bob> <hex>
    Open {
        /// Your secret key file (the recipient's or the sender's).
        #[arg(long, default_value = "axon.key")]
        key: PathBuf,
        /// The sender's public key (the DM event's pubkey).
        #[arg(long, value_parser = parse_pubkey)]
        from: PublicKey,
        /// The recipient's public key (the DM event's `p` tag).
        #[arg(long, value_parser = parse_pubkey)]
        to: PublicKey,
        /// The content as hex; `-` reads it from standard input.
        content: String,
    },
}

fn argument_or_stdin(value: &str) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    if value != "-" {
        return Ok(value.as_bytes().to_vec());
    }
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|error| format!("cannot read standard input: {error}"))?;
    Ok(bytes)
}

/// `axon dm`.
pub fn run(args: DmArgs) -> CliResult {
    match args.command {
        DmCommand::Seal { key, to, plaintext } => {
            let key = read_key_file(&key)?;
            let content = dm::seal(&key, &to, &argument_or_stdin(&plaintext)?)
                .map_err(|error| format!("cannot seal: {error}"))?;
            println!("{}", hex::encode(content));
        }
        DmCommand::Open { key, from, to, content } => {
            let key = read_key_file(&key)?;
            let text = String::from_utf8(argument_or_stdin(&content)?).map_err(|_| "content must be hex")?;
            let content = hex::decode(text.trim()).map_err(|_| "content must be hex")?;
            let plaintext = dm::open(&key, &from, &to, &content).map_err(|error| format!("cannot open: {error}"))?;
            std::io::stdout().write_all(&plaintext)?;
        }
    }
    Ok(())
}
