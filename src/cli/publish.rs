//! `axon publish`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::common::{parse_duration, parse_tag, publish_error_message, ConnectArgs, Output};
use super::{CliError, CliResult};
use crate::client::{Client, ClientError, SubItem};
use crate::clock::unix_now;
use crate::protocol::error::codes;
use crate::protocol::tags::EXPIRES_AT;
use crate::protocol::{Event, Filter, Tag};

/// Arguments of `axon publish`.
#[derive(Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The event kind, 0..=65535 (1000 = message, 3000-3999 ephemeral, ...).
    #[arg(long)]
    pub kind: u16,
    /// Add a tag NAME=VALUE (repeatable). The value is everything after the first '=';
    /// `--tag NAME` alone adds a tag with no values.
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag)]
    pub tags: Vec<Tag>,
    /// Add an `expires_at` tag this far in the future: 30s, 10m, 2h, 1d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires_in: Option<Duration>,
    /// created_at in unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub created_at: Option<u64>,
    /// Read the content from this file (any bytes, sent unchanged).
    #[arg(long, value_name = "FILE", conflicts_with = "content")]
    pub file: Option<PathBuf>,
    /// The content as text; `-` reads it from standard input. Default: empty.
    pub content: Option<String>,
}

fn read_content(args: &PublishArgs) -> Result<Vec<u8>, CliError> {
    if let Some(path) = &args.file {
        return std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()).into());
    }
    match args.content.as_deref() {
        Some("-") => {
            let mut content = Vec::new();
            std::io::stdin()
                .read_to_end(&mut content)
                .map_err(|error| format!("cannot read standard input: {error}"))?;
            Ok(content)
        }
        Some(text) => Ok(text.as_bytes().to_vec()),
        None => Ok(Vec::new()),
    }
}

/// How a publish ended, once 409 has been looked into.
pub(super) enum Published {
    /// Stored now (or ephemeral: `None`).
    New(Option<u64>),
    /// Already stored before, at this seq (when it could be found).
    Duplicate(Option<u64>),
}

/// Publishes `event`; a 409 is checked against the store: if the event is there it was
/// a duplicate (success), otherwise the 409 was a refusal (e.g. a REVOKE of a relay.yaml
/// key) and is returned as an error.
pub(super) async fn publish_event(client: &Client, event: &Event) -> Result<Published, ClientError> {
    match tokio::time::timeout(super::common::REPLY_TIMEOUT, client.publish(event)).await {
        Err(_) => Err(ClientError::Protocol(format!(
            "no answer from the relay within {} s",
            super::common::REPLY_TIMEOUT.as_secs()
        ))),
        Ok(Ok(seq)) => Ok(Published::New(seq)),
        Ok(Err(error)) if error.code() == Some(codes::DUPLICATE) => match stored_seq(client, event.id).await {
            Some(seq) => Ok(Published::Duplicate(Some(seq))),
            None if error.to_string().contains("already stored") => Ok(Published::Duplicate(None)),
            None => Err(error),
        },
        Ok(Err(error)) => Err(error),
    }
}

/// The seq of a stored event, looked up by id.
async fn stored_seq(client: &Client, id: [u8; 32]) -> Option<u64> {
    let filter = Filter { ids: Some(vec![id.to_vec()]), limit: Some(1), ..Filter::default() };
    let mut subscription = client.subscribe("publish-lookup", vec![filter], None).await.ok()?;
    let lookup = async {
        let mut found = None;
        loop {
            match subscription.next().await? {
                SubItem::Event { event, seq, .. } if event.id == id => found = Some(seq),
                SubItem::Event { .. } => {}
                SubItem::Eose => return found,
                SubItem::Ended(_) => return None,
            }
        }
    };
    let found = tokio::time::timeout(Duration::from_secs(5), lookup).await.ok().flatten();
    let _ = client.unsubscribe("publish-lookup").await;
    found
}

/// `axon publish`.
pub async fn publish(args: PublishArgs) -> CliResult {
    let key = args.connect.signing_key()?;
    let content = read_content(&args)?;
    let now = unix_now();
    let mut tags = args.tags;
    if let Some(expires_in) = args.expires_in {
        tags.push(Tag::new(EXPIRES_AT, [now.saturating_add(expires_in.as_secs()).to_string()]));
    }
    let event = Event::sign(&key, args.created_at.unwrap_or(now), args.kind, content, tags)
        .map_err(|error| format!("cannot build the event: {}", error.message()))?;
    let client = args.connect.connect(&key).await?;
    let id = hex::encode(event.id);
    let line = match publish_event(&client, &event).await {
        Ok(Published::New(Some(seq))) => format!("{id} {seq}"),
        Ok(Published::New(None)) => {
            eprintln!("note: kind {} is ephemeral: delivered live, not stored (seq 0)", event.kind);
            format!("{id} 0")
        }
        Ok(Published::Duplicate(seq)) => {
            eprintln!("note: the relay already stores this event (409 duplicate): nothing to do");
            match seq {
                Some(seq) => format!("{id} {seq}"),
                None => format!("{id} -"),
            }
        }
        Err(ClientError::Rejected { code, message, .. }) => {
            return Err(format!("event {id} not published: {}", publish_error_message(code, &message)).into())
        }
        Err(ClientError::Closed) => {
            return Err(format!("event {id}: the relay closed the connection before answering").into())
        }
        Err(error) => return Err(format!("event {id}: {error}").into()),
    };
    let mut out = Output::new(true);
    if let Err(error) = out.line(&line) {
        return error.into_result();
    }
    Ok(())
}
