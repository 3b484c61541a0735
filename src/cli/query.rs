//! `axon req` (events as JSON lines, optionally following live events with resume) and
//! `axon export` (raw MessagePack events).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::Args;
use serde::Serialize;

use super::common::{parse_hex_prefix, parse_tag, parse_time, ConnectArgs, Output, OutputError, REPLY_TIMEOUT};
use super::{CliError, CliResult};
use crate::client::{retry_delay, Client, ClientError, SubItem, Subscription};
use crate::protocol::error::codes;
use crate::protocol::frame::ErrorMessage;
use crate::protocol::{Event, Filter, TagFilter};

/// The subscription id the commands use.
const SUB_ID: &str = "axon-cli";
/// First reconnect delay of `req --stream`.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest reconnect delay of `req --stream`.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A hex prefix of an id or a public key (1..=32 bytes).
#[derive(Clone, Debug)]
pub struct HexPrefix(pub Vec<u8>);

fn parse_prefix(text: &str) -> Result<HexPrefix, String> {
    parse_hex_prefix(text).map(HexPrefix)
}

/// A `--tag NAME=VALUE` condition.
#[derive(Clone, Debug)]
pub struct TagCondition {
    name: String,
    value: String,
}

fn parse_tag_condition(text: &str) -> Result<TagCondition, String> {
    let tag = parse_tag(text)?;
    match tag.values.into_iter().next() {
        Some(value) => Ok(TagCondition { name: tag.name, value }),
        None => Err(format!("tag condition {text:?} needs a value: NAME=VALUE")),
    }
}

/// Filter flags shared by `axon req` and `axon export` (spec §9.1).
#[derive(Args, Clone, Debug)]
pub struct FilterArgs {
    /// Match this kind (repeatable: any of them).
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<u16>,
    /// Match this author: a public key or a hex prefix of one (repeatable: any of them).
    #[arg(long = "author", value_name = "HEX", value_parser = parse_prefix)]
    pub authors: Vec<HexPrefix>,
    /// Match this event id or hex prefix of one (repeatable: any of them).
    #[arg(long = "id", value_name = "HEX", value_parser = parse_prefix)]
    pub ids: Vec<HexPrefix>,
    /// Match events with a tag NAME whose first value is VALUE. Repeat with the same
    /// NAME to accept any of several values; different NAMEs must all match.
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag_condition)]
    pub tags: Vec<TagCondition>,
    /// Only events created at or after T: unix seconds, or a duration ago (2h, 1d).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only events created at or before T: unix seconds, or a duration ago (2h, 1d).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<i64>,
}

impl FilterArgs {
    /// The one filter these flags describe.
    pub fn filter(&self, limit: Option<u64>) -> Filter {
        let mut tags: Vec<TagFilter> = Vec::new();
        for condition in &self.tags {
            match tags.iter_mut().find(|tag| tag.name == condition.name) {
                Some(tag) => {
                    if !tag.values.contains(&condition.value) {
                        tag.values.push(condition.value.clone());
                    }
                }
                None => tags.push(TagFilter { name: condition.name.clone(), values: vec![condition.value.clone()] }),
            }
        }
        let prefixes = |list: &[HexPrefix]| (!list.is_empty()).then(|| list.iter().map(|p| p.0.clone()).collect());
        Filter {
            ids: prefixes(&self.ids),
            authors: prefixes(&self.authors),
            kinds: (!self.kinds.is_empty()).then(|| self.kinds.clone()),
            since: self.since,
            until: self.until,
            tags: (!tags.is_empty()).then_some(tags),
            limit,
        }
    }
}

/// Arguments of `axon req`.
#[derive(Args)]
pub struct ReqArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most N stored events, newest first (the relay caps it at its max_limit;
    /// 0 = live events only, with --stream). Ignored with --after-seq.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Keep printing live events after the stored ones; reconnect and resume on
    /// disconnect or overflow.
    #[arg(long)]
    pub stream: bool,
    /// Replay mode: every stored match with seq > N, oldest first (limits ignored).
    #[arg(long, value_name = "N")]
    pub after_seq: Option<u64>,
}

/// One event as a JSON line.
#[derive(Serialize)]
struct JsonEvent<'a> {
    id: String,
    pubkey: String,
    created_at: u64,
    kind: u16,
    tags: Vec<Vec<&'a str>>,
    content: Cow<'a, str>,
    content_encoding: &'static str,
    seq: u64,
}

/// The JSON line for an event: ids and keys in hex, content as UTF-8 text when it is
/// valid UTF-8, else base64 (standard alphabet, padded).
pub fn json_line(event: &Event, seq: u64) -> String {
    let (content, content_encoding) = match std::str::from_utf8(&event.content) {
        Ok(text) => (Cow::Borrowed(text), "utf8"),
        Err(_) => (Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&event.content)), "base64"),
    };
    let line = JsonEvent {
        id: hex::encode(event.id),
        pubkey: hex::encode(event.pubkey),
        created_at: event.created_at,
        kind: event.kind,
        tags: event
            .tags
            .iter()
            .map(|tag| std::iter::once(tag.name.as_str()).chain(tag.values.iter().map(String::as_str)).collect())
            .collect(),
        content,
        content_encoding,
        seq,
    };
    // Strings, integers and lists of strings always serialize.
    serde_json::to_string(&line).unwrap_or_default()
}

/// Why `req` stopped.
enum ReqError {
    /// Writing the output failed (or its reader went away).
    Output(OutputError),
    /// Anything else.
    Failed(CliError),
}

impl From<OutputError> for ReqError {
    fn from(error: OutputError) -> Self {
        ReqError::Output(error)
    }
}

impl From<CliError> for ReqError {
    fn from(error: CliError) -> Self {
        ReqError::Failed(error)
    }
}

impl From<String> for ReqError {
    fn from(error: String) -> Self {
        ReqError::Failed(error.into())
    }
}

/// `axon req`.
pub async fn req(args: ReqArgs) -> CliResult {
    let key = args.connect.signing_key()?;
    let filter = args.filter.filter(args.limit);
    let mut out = Output::new(args.stream);
    let result = if args.stream {
        stream(&args, &key, filter, &mut out).await
    } else {
        once(&args, &key, filter, &mut out).await
    };
    let result = result.and_then(|()| out.flush().map_err(ReqError::from));
    match result {
        Ok(()) => Ok(()),
        Err(ReqError::Output(error)) => error.into_result(),
        Err(ReqError::Failed(error)) => {
            let _ = out.flush();
            Err(error)
        }
    }
}

/// The next item, or an error after [`REPLY_TIMEOUT`] of silence.
async fn next_item(subscription: &mut Subscription) -> Result<Option<SubItem>, String> {
    tokio::time::timeout(REPLY_TIMEOUT, subscription.next())
        .await
        .map_err(|_| format!("the relay sent nothing for {} s before EOSE", REPLY_TIMEOUT.as_secs()))
}

/// An ERROR the relay sent without naming a subscription (e.g. "this key was revoked")
/// just before closing, if any.
async fn closing_error(client: &Client) -> Option<ErrorMessage> {
    tokio::time::timeout(Duration::ZERO, client.next_error()).await.ok().flatten()
}

fn ended_message(error: &ErrorMessage) -> String {
    format!("the relay ended the subscription: {} {}", error.code, error.message)
}

/// Stored events until EOSE, then exit.
async fn once(
    args: &ReqArgs,
    key: &ed25519_dalek::SigningKey,
    filter: Filter,
    out: &mut Output,
) -> Result<(), ReqError> {
    let client = args.connect.connect(key).await?;
    let mut subscription = client
        .subscribe(SUB_ID, vec![filter], args.after_seq)
        .await
        .map_err(|_| "the relay closed the connection".to_owned())?;
    loop {
        match next_item(&mut subscription).await? {
            Some(SubItem::Event { event, seq, .. }) => out.line(&json_line(&event, seq))?,
            Some(SubItem::Eose) => return Ok(()),
            Some(SubItem::Ended(error)) => return Err(ended_message(&error).into()),
            None => {
                return Err(match closing_error(&client).await {
                    Some(error) => format!("the relay closed the connection: {} {}", error.code, error.message),
                    None => "the relay closed the connection before EOSE".to_owned(),
                }
                .into())
            }
        }
    }
}

/// Whether the current subscription sends newest-first stored events or seq order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Without after_seq, before EOSE: stored events newest first.
    NewestFirst,
    /// Replay (after_seq) or live: ascending seq.
    Ascending,
}

/// What `req --stream` remembers so that a resumed subscription misses nothing and
/// repeats nothing.
#[derive(Debug)]
struct StreamState {
    /// The user's --after-seq.
    initial_after: Option<u64>,
    /// --limit 0: live only.
    live_only: bool,
    /// Highest seq printed.
    last_printed: Option<u64>,
    /// Highest resume point an overflow ERROR gave.
    overflow: Option<u64>,
    /// An EOSE was seen at least once.
    eose_seen: bool,
    /// Seqs printed by a newest-first stored phase that has not reached EOSE: skipped
    /// if that phase is repeated after a reconnect.
    printed_before_eose: HashSet<u64>,
    /// The current subscription's order.
    phase: Phase,
}

impl StreamState {
    fn new(initial_after: Option<u64>, live_only: bool) -> StreamState {
        StreamState {
            initial_after,
            live_only,
            last_printed: None,
            overflow: None,
            eose_seen: false,
            printed_before_eose: HashSet::new(),
            phase: Phase::NewestFirst,
        }
    }

    /// The after_seq for the next SUBSCRIBE; `None` repeats the original request.
    fn resume_point(&self) -> Option<u64> {
        if self.initial_after.is_none() && !self.eose_seen && self.overflow.is_none() {
            // The newest-first stored phase never finished: repeat it (lines already
            // printed are skipped by seq).
            return None;
        }
        let known = [self.last_printed, self.overflow, self.initial_after].into_iter().flatten().max();
        match known {
            Some(seq) => Some(seq),
            // EOSE came with nothing printed: nothing matched then, so every match
            // stored since is new. (With --limit 0 old matches may exist: repeat.)
            None if self.eose_seen && !self.live_only => Some(0),
            None => None,
        }
    }

    /// Starts a (re)subscription; returns its after_seq.
    fn start(&mut self) -> Option<u64> {
        let after = self.resume_point();
        self.phase = if after.is_some() { Phase::Ascending } else { Phase::NewestFirst };
        after
    }

    /// Should this event be printed? Records it if so.
    fn admit(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return true; // ephemeral: live only, never repeated by a resume
        }
        match self.phase {
            Phase::NewestFirst => {
                if !self.printed_before_eose.insert(seq) {
                    return false;
                }
            }
            Phase::Ascending => {
                if self.last_printed.is_some_and(|last| seq <= last) {
                    return false;
                }
            }
        }
        self.last_printed = Some(self.last_printed.map_or(seq, |last| last.max(seq)));
        true
    }

    fn eose(&mut self) {
        self.eose_seen = true;
        self.phase = Phase::Ascending;
        self.printed_before_eose.clear();
    }

    fn overflowed(&mut self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.overflow = Some(self.overflow.map_or(seq, |known| known.max(seq)));
        }
    }
}

/// How one connection of `req --stream` ended.
enum Interrupted {
    /// Disconnected, overflowed or refused: reconnect, after the relay's retry hint
    /// (spec §15) when it gave one.
    Retry(String, Option<Duration>),
}

/// Stored events, then live ones forever, reconnecting with backoff.
async fn stream(
    args: &ReqArgs,
    key: &ed25519_dalek::SigningKey,
    filter: Filter,
    out: &mut Output,
) -> Result<(), ReqError> {
    let mut state = StreamState::new(args.after_seq, args.limit == Some(0));
    let mut backoff = BACKOFF_START;
    let pubkey = hex::encode(key.verifying_key().to_bytes());
    loop {
        let Interrupted::Retry(reason, hint) = match args.connect.try_connect(key).await {
            Ok(client) => follow(&client, &mut state, &filter, out, &mut backoff).await?,
            Err(error @ ClientError::Rejected { code: codes::AUTH_REQUIRED | codes::RESTRICTED, .. }) => {
                return Err(args.connect.connect_error(&error, &pubkey).into())
            }
            Err(error) => Interrupted::Retry(args.connect.connect_error(&error, &pubkey), error.retry_after()),
        };
        let resume = state
            .resume_point()
            .map_or_else(|| "repeating the request".to_owned(), |seq| format!("resuming after seq {seq}"));
        let delay = retry_delay(hint, backoff);
        let why = if hint.is_some() { " (the relay's retry hint)" } else { "" };
        eprintln!("axon: {reason}; reconnecting in {:.1} s{why}, {resume}", delay.as_secs_f64());
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Runs one subscription on one connection until it is interrupted.
async fn follow(
    client: &Client,
    state: &mut StreamState,
    filter: &Filter,
    out: &mut Output,
    backoff: &mut Duration,
) -> Result<Interrupted, ReqError> {
    let after = state.start();
    let Ok(mut subscription) = client.subscribe(SUB_ID, vec![filter.clone()], after).await else {
        return Ok(Interrupted::Retry("the relay closed the connection".into(), None));
    };
    loop {
        match subscription.next().await {
            Some(SubItem::Event { event, seq, .. }) => {
                if state.admit(seq) {
                    out.line(&json_line(&event, seq))?;
                }
            }
            Some(SubItem::Eose) => {
                state.eose();
                *backoff = BACKOFF_START;
            }
            Some(SubItem::Ended(error)) if error.code == codes::UNAVAILABLE => {
                state.overflowed(error.seq);
                let hint = error.retry_after_ms.map(Duration::from_millis);
                return Ok(Interrupted::Retry(ended_message(&error), hint));
            }
            Some(SubItem::Ended(error)) => return Err(ended_message(&error).into()),
            None => {
                return match closing_error(client).await {
                    Some(error) if error.code == codes::AUTH_REQUIRED || error.code == codes::RESTRICTED => {
                        Err(format!(
                            "the relay closed the connection: {} {} (this key is no longer allowed)",
                            error.code, error.message
                        )
                        .into())
                    }
                    Some(error) => Ok(Interrupted::Retry(
                        format!("the relay closed the connection ({} {})", error.code, error.message),
                        error.retry_after_ms.map(Duration::from_millis),
                    )),
                    None => Ok(Interrupted::Retry("the connection was lost".into(), None)),
                };
            }
        }
    }
}

/// Arguments of `axon export`.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Write to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `axon export`.
pub async fn export(args: ExportArgs) -> CliResult {
    let mut sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|error| format!("cannot create {}: {error}", path.display()))?,
        )),
        None if std::io::stdout().is_terminal() => {
            return Err("refusing to write binary events to a terminal: redirect standard output (> events.axon) \
                        or use --out FILE"
                .into())
        }
        None => Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
    };
    let key = args.connect.signing_key()?;
    let client = args.connect.connect(&key).await?;
    let mut subscription = client
        .subscribe(SUB_ID, vec![args.filter.filter(None)], Some(0))
        .await
        .map_err(|_| "the relay closed the connection")?;
    let (mut count, mut bytes, mut last_seq) = (0u64, 0u64, 0u64);
    let write_failed = |error: std::io::Error| -> CliError {
        match &args.out {
            Some(path) => format!("cannot write {}: {error}", path.display()).into(),
            None if error.kind() == std::io::ErrorKind::BrokenPipe => "standard output was closed".into(),
            None => format!("cannot write to standard output: {error}").into(),
        }
    };
    loop {
        match next_item(&mut subscription).await? {
            Some(SubItem::Event { raw, seq, .. }) => {
                sink.write_all(raw.as_bytes()).map_err(write_failed)?;
                count += 1;
                bytes += raw.as_bytes().len() as u64;
                last_seq = seq;
            }
            Some(SubItem::Eose) => break,
            Some(SubItem::Ended(error)) => return Err(ended_message(&error).into()),
            None => return Err("the relay closed the connection before the export was complete".into()),
        }
    }
    sink.flush().map_err(write_failed)?;
    let _ = client.unsubscribe(SUB_ID).await;
    eprintln!("exported {count} events ({bytes} bytes, up to seq {last_seq})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Tag;

    #[test]
    fn json_lines_use_hex_and_pick_the_content_encoding() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let event = Event::sign(&key, 5, 1000, b"hi".to_vec(), vec![Tag::new("t", ["a", "b"])]).expect("sign");
        let value: serde_json::Value = serde_json::from_str(&json_line(&event, 9)).expect("json");
        assert_eq!(value["id"], hex::encode(event.id));
        assert_eq!(value["pubkey"], hex::encode(event.pubkey));
        assert_eq!(value["created_at"], 5);
        assert_eq!(value["kind"], 1000);
        assert_eq!(value["tags"], serde_json::json!([["t", "a", "b"]]));
        assert_eq!(value["content"], "hi");
        assert_eq!(value["content_encoding"], "utf8");
        assert_eq!(value["seq"], 9);
        let binary = Event::sign(&key, 5, 1000, vec![0xff, 0, 0x80], vec![]).expect("sign");
        let value: serde_json::Value = serde_json::from_str(&json_line(&binary, 1)).expect("json");
        assert_eq!(value["content"], "/wCA");
        assert_eq!(value["content_encoding"], "base64");
    }

    #[test]
    fn tag_conditions_group_by_name() {
        let args = FilterArgs {
            kinds: vec![1],
            authors: vec![],
            ids: vec![],
            tags: ["t=a", "t=b", "u=c", "t=a"].iter().map(|text| parse_tag_condition(text).expect("tag")).collect(),
            since: None,
            until: None,
        };
        let filter = args.filter(Some(3));
        assert_eq!(
            filter.tags,
            Some(vec![
                TagFilter { name: "t".into(), values: vec!["a".into(), "b".into()] },
                TagFilter { name: "u".into(), values: vec!["c".into()] },
            ])
        );
        assert_eq!(filter.limit, Some(3));
        assert_eq!(filter.ids, None);
        assert!(parse_tag_condition("t").is_err());
    }

    #[test]
    fn stream_resumes_after_the_last_printed_seq() {
        let mut state = StreamState::new(None, false);
        assert_eq!(state.start(), None);
        // Newest first: 9, 7, then EOSE, then live 12.
        assert!(state.admit(9));
        assert!(state.admit(7));
        state.eose();
        assert!(state.admit(12));
        assert!(state.admit(0), "ephemeral events are always printed");
        // Disconnect: resume after 12; a repeat of 12 is dropped.
        assert_eq!(state.start(), Some(12));
        assert!(!state.admit(12));
        assert!(state.admit(13));
        // Overflow with a resume point below what was printed: keep the highest.
        state.overflowed(Some(10));
        assert_eq!(state.start(), Some(13));
    }

    #[test]
    fn stream_repeats_an_unfinished_newest_first_phase_without_repeating_lines() {
        let mut state = StreamState::new(None, false);
        assert_eq!(state.start(), None);
        assert!(state.admit(9));
        // Lost before EOSE: the newest-first request is repeated, 9 is not printed twice.
        assert_eq!(state.start(), None);
        assert!(state.admit(10), "stored while disconnected");
        assert!(!state.admit(9));
        assert!(state.admit(8));
        state.eose();
        assert_eq!(state.start(), Some(10));
    }

    #[test]
    fn stream_resume_points_without_printed_events() {
        // Overflow before anything matched: resume at the relay's resume point.
        let mut state = StreamState::new(None, false);
        state.start();
        state.overflowed(Some(40));
        assert_eq!(state.start(), Some(40));
        // EOSE with nothing printed: every later match is new.
        let mut state = StreamState::new(None, false);
        state.start();
        state.eose();
        assert_eq!(state.start(), Some(0));
        // --limit 0: old matches exist, so the live-only request is repeated.
        let mut state = StreamState::new(None, true);
        state.start();
        state.eose();
        assert_eq!(state.start(), None);
        // --after-seq is the floor.
        let mut state = StreamState::new(Some(5), false);
        assert_eq!(state.start(), Some(5));
        assert!(state.admit(6));
        assert_eq!(state.start(), Some(6));
    }
}
