//! What the client subcommands share: the connection flags, timeouts, the small parsers,
//! error messages for relay answers, and standard output that treats a closed pipe as
//! the end. Used by [`super::publish`], [`super::admin`], [`super::query`],
//! [`super::import`] and [`super::backup`]; it imports none of them.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ed25519_dalek::SigningKey;

use super::{CliError, CliResult};
use crate::client::{Client, ClientError};
use crate::protocol::error::codes;
use crate::protocol::{PublicKey, Tag};

/// How long to wait for the WebSocket and the AUTH handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the relay's answer to one request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to connect and as whom: shared by every command that talks to a relay.
#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// The relay's WebSocket URL.
    #[arg(long, env = "AXON_URL", default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// The relay_url string signed into AUTH: exactly the relay's configured
    /// `relay_url` (see its info document). Default: the same as --url.
    #[arg(long, env = "AXON_RELAY_URL")]
    pub relay_url: Option<String>,
    /// Secret key file written by `axon keygen`.
    #[arg(long, env = "AXON_KEY", default_value = "axon.key")]
    pub key: PathBuf,
}

impl ConnectArgs {
    /// The string to sign in AUTH.
    pub fn relay_url(&self) -> &str {
        self.relay_url.as_deref().unwrap_or(&self.url)
    }

    /// Reads the key file.
    pub fn signing_key(&self) -> Result<SigningKey, CliError> {
        super::keys::read_key_file(&self.key)
    }

    /// Connects and authenticates with `key`, turning every failure into a message that
    /// says what to do.
    pub async fn connect(&self, key: &SigningKey) -> Result<Client, CliError> {
        self.try_connect(key).await.map_err(|error| {
            let pubkey = hex::encode(key.verifying_key().to_bytes());
            CliError::from(self.connect_error(&error, &pubkey))
        })
    }

    /// Connects and authenticates with `key`, bounded by [`CONNECT_TIMEOUT`].
    pub async fn try_connect(&self, key: &SigningKey) -> Result<Client, ClientError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(&self.url, self.relay_url(), key)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Connect {
                url: self.url.clone(),
                reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Explains a failed connect.
    pub fn connect_error(&self, error: &ClientError, pubkey: &str) -> String {
        match error {
            ClientError::Connect { url, reason } => {
                format!("cannot connect to {url}: {reason} (is the relay running? set --url or AXON_URL)")
            }
            ClientError::Rejected { code: codes::AUTH_REQUIRED, message, .. } => format!(
                "authentication failed (401: {message}): the relay did not accept the AUTH signature; \
                 --relay-url must be exactly the relay's configured relay_url (signed: {:?})",
                self.relay_url()
            ),
            ClientError::Rejected { code: codes::RESTRICTED, message, .. } => format!(
                "this key ({pubkey}) is not allowed to connect: it is neither an admin nor on the relay's \
                 allowlist (403: {message})"
            ),
            ClientError::Rejected { code, message, .. } => {
                format!("the relay refused the connection: {code} {message}")
            }
            ClientError::Closed => format!("{} closed the connection during the handshake", self.url),
            ClientError::Protocol(reason) => format!("{} does not speak Axon: {reason}", self.url),
        }
    }
}

/// A clear sentence for an error code the relay answered a PUBLISH with (spec §8).
pub fn publish_error_message(code: u16, message: &str) -> String {
    let explanation = match code {
        codes::INVALID => "the relay rejected the event as invalid",
        codes::AUTH_REQUIRED => "not authenticated",
        codes::RESTRICTED => "this key is not allowed to publish/author this event",
        codes::DUPLICATE => "an event with this id is already stored",
        codes::EXPIRED => "the event's expires_at is already past",
        codes::TOO_LARGE => "the event is too large for this relay (content over its max_content_bytes)",
        codes::RATE_LIMITED => "rate limited: this key publishes faster than the relay allows; retry later",
        codes::INTERNAL => "the relay failed to store the event (nothing was stored); retry",
        codes::UNAVAILABLE => "the relay is overloaded or shutting down; retry later",
        _ => "the relay rejected the event",
    };
    format!("{explanation} ({code}: {message})")
}

/// Turns an error from a request on an open connection into a message.
pub fn request_error(error: ClientError) -> CliError {
    match error {
        ClientError::Rejected { code, message, .. } => publish_error_message(code, &message).into(),
        ClientError::Closed => "the relay closed the connection before answering".into(),
        other => other.to_string().into(),
    }
}

/// Awaits a reply with [`REPLY_TIMEOUT`].
pub async fn with_reply_timeout<T>(future: impl Future<Output = Result<T, ClientError>>) -> Result<T, CliError> {
    match tokio::time::timeout(REPLY_TIMEOUT, future).await {
        Ok(result) => result.map_err(request_error),
        Err(_) => Err(format!("no answer from the relay within {} s", REPLY_TIMEOUT.as_secs()).into()),
    }
}

/// Parses `30s`, `10m`, `2h`, `1d` or plain seconds (`90`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let multiplier = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?} is not a duration (use e.g. 30s, 10m, 2h, 1d)")),
    };
    let count: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration (use e.g. 30s, 10m, 2h, 1d)"))?;
    count.checked_mul(multiplier).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}

/// Parses a time for --since/--until: unix seconds (`1718000000`), or a duration ago
/// (`2h` = two hours before now).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?} is too large a unix time"));
    }
    let ago = parse_duration(text)
        .map_err(|_| format!("{text:?} is neither unix seconds nor a duration ago like 30m, 2h, 1d"))?;
    Ok(crate::clock::unix_now().saturating_sub(ago.as_secs()) as i64)
}

/// Parses `--tag name=value` (split at the first '='); `name` alone is a value-less tag.
pub fn parse_tag(text: &str) -> Result<Tag, String> {
    let (name, values) = match text.split_once('=') {
        Some((name, value)) => (name, vec![value.to_owned()]),
        None => (text, Vec::new()),
    };
    if name.is_empty() {
        return Err(format!("tag {text:?} has an empty name (use --tag name=value)"));
    }
    Ok(Tag { name: name.to_owned(), values })
}

/// Parses a full 64-hex-character public key (either case).
pub fn parse_pubkey(text: &str) -> Result<PublicKey, String> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|_| format!("{text:?} is not a public key (64 hex characters)"))?;
    Ok(key)
}

/// Parses a hex prefix of an id or a key: 2..=64 hex characters, an even number.
pub fn parse_hex_prefix(text: &str) -> Result<Vec<u8>, String> {
    let bytes =
        hex::decode(text.trim()).map_err(|_| format!("{text:?} is not hex (an even number of hex characters)"))?;
    if bytes.is_empty() || bytes.len() > 32 {
        return Err(format!("{text:?} must be 2 to 64 hex characters"));
    }
    Ok(bytes)
}

/// Standard output that treats a closed pipe (`axon req | head`) as a normal end.
pub struct Output {
    out: std::io::BufWriter<std::io::Stdout>,
    flush_each: bool,
}

impl Output {
    /// `flush_each`: flush after every write (for live streams).
    pub fn new(flush_each: bool) -> Output {
        Output { out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()), flush_each }
    }

    /// Writes bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.out.write_all(bytes).map_err(OutputError::from)?;
        if self.flush_each {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes a line.
    pub fn line(&mut self, text: &str) -> Result<(), OutputError> {
        self.out.write_all(text.as_bytes()).map_err(OutputError::from)?;
        self.write(b"\n")
    }

    /// Flushes.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.out.flush().map_err(OutputError::from)
    }
}

/// Why writing to standard output failed.
#[derive(Debug)]
pub enum OutputError {
    /// The pipe was closed by the reader: not an error for the user.
    Closed,
    /// Anything else (disk full, ...).
    Failed(std::io::Error),
}

impl From<std::io::Error> for OutputError {
    fn from(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            OutputError::Closed
        } else {
            OutputError::Failed(error)
        }
    }
}

impl OutputError {
    /// `Ok(())` for a closed pipe, else an error to report.
    pub fn into_result(self) -> CliResult {
        match self {
            OutputError::Closed => Ok(()),
            OutputError::Failed(error) => Err(format!("cannot write to standard output: {error}").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "m", "1w", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000));
        let now = crate::clock::unix_now() as i64;
        let ago = parse_time("1h").expect("1h");
        assert!((now - 3600 - ago).abs() <= 1);
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(parse_tag("topic=news"), Ok(Tag::new("topic", ["news"])));
        assert_eq!(parse_tag("url=https://x/?a=b"), Ok(Tag::new("url", ["https://x/?a=b"])));
        assert_eq!(parse_tag("empty="), Ok(Tag::new("empty", [""])));
        assert_eq!(parse_tag("flag"), Ok(Tag::new::<_, String>("flag", [])));
        assert!(parse_tag("=value").is_err());
    }

    #[test]
    fn hex_inputs() {
        assert_eq!(parse_hex_prefix("ab01"), Ok(vec![0xab, 0x01]));
        assert!(parse_hex_prefix("abc").is_err());
        assert!(parse_hex_prefix("").is_err());
        assert!(parse_hex_prefix(&"00".repeat(33)).is_err());
        assert_eq!(parse_pubkey(&"AB".repeat(32)), Ok([0xab; 32]));
        assert!(parse_pubkey(&"ab".repeat(31)).is_err());
    }
}
