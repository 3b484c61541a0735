//! `axon import`: publishes a stream of raw MessagePack events (as written by
//! `axon export`), verifying each first, many publishes in flight at once.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::common::{ConnectArgs, Output, REPLY_TIMEOUT};
use super::CliResult;
use crate::client::{retry_delay, Client, ClientError};
use crate::protocol::error::codes;
use crate::protocol::event::decode_and_validate;
use crate::protocol::kind::is_admin;
use crate::protocol::msgpack::Reader;
use crate::protocol::{EventId, Limits, RawEvent};

/// Read size of the input.
const CHUNK: usize = 1 << 20;
/// An unfinished value this large is not an event: the stream is corrupt.
const MAX_PENDING: usize = 64 << 20;
/// Invalid events reported one by one before the rest are only counted.
const REPORT_INVALID: u64 = 10;
/// Tries for an event the relay rate-limits (429).
const RATE_LIMIT_TRIES: u32 = 6;

/// Arguments of `axon import`.
#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// A file written by `axon export`; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Publishes awaiting their answer at once.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub in_flight: u32,
}

/// Splits a byte stream of concatenated MessagePack values into values.
struct Splitter {
    input: Box<dyn Read>,
    buffer: Vec<u8>,
    start: usize,
    /// Stream offset of `buffer[start]`.
    offset: u64,
    eof: bool,
}

impl Splitter {
    fn new(input: Box<dyn Read>) -> Splitter {
        Splitter { input, buffer: Vec::new(), start: 0, offset: 0, eof: false }
    }

    /// The next value and its offset; `Ok(None)` at a clean end.
    fn next(&mut self) -> Result<Option<(u64, Bytes)>, String> {
        loop {
            let pending = &self.buffer[self.start..];
            if !pending.is_empty() {
                match Reader::new(pending).skip_value() {
                    Ok(value) => {
                        let value = Bytes::copy_from_slice(value);
                        let offset = self.offset;
                        self.start += value.len();
                        self.offset += value.len() as u64;
                        return Ok(Some((offset, value)));
                    }
                    Err(error) if self.eof || pending.len() > MAX_PENDING => {
                        return Err(format!(
                            "the input is not a stream of MessagePack events at byte {} ({}): it is truncated or \
                             corrupt",
                            self.offset,
                            error.message()
                        ))
                    }
                    Err(_) => {} // incomplete: read more
                }
            } else if self.eof {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<(), String> {
        self.buffer.drain(..self.start);
        self.start = 0;
        let filled = self.buffer.len();
        self.buffer.resize(filled + CHUNK, 0);
        let read = loop {
            match self.input.read(&mut self.buffer[filled..]) {
                Ok(read) => break read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    self.buffer.truncate(filled);
                    return Err(format!("cannot read the input: {error}"));
                }
            }
        };
        self.buffer.truncate(filled + read);
        self.eof = read == 0;
        Ok(())
    }
}

/// How one publish ended.
enum Outcome {
    Imported,
    Duplicate,
    Rejected {
        code: u16,
        message: String,
    },
    /// The connection failed: stop.
    Lost(String),
}

async fn publish_one(client: &Client, id: EventId, raw: Bytes) -> Outcome {
    let mut tries = 1;
    loop {
        let answer = tokio::time::timeout(REPLY_TIMEOUT, client.publish_raw(id, RawEvent(raw.clone()))).await;
        return match answer {
            Err(_) => Outcome::Lost(format!("no answer from the relay within {} s", REPLY_TIMEOUT.as_secs())),
            Ok(Ok(_)) => Outcome::Imported,
            Ok(Err(ClientError::Rejected { code: codes::DUPLICATE, .. })) => Outcome::Duplicate,
            // 429, or 503 (overload, drain, full disk): wait as the relay asks (spec §15).
            Ok(Err(error @ ClientError::Rejected { code: codes::RATE_LIMITED | codes::UNAVAILABLE, .. }))
                if tries < RATE_LIMIT_TRIES =>
            {
                tokio::time::sleep(retry_delay(error.retry_after(), Duration::from_millis(250 << tries))).await;
                tries += 1;
                continue;
            }
            Ok(Err(ClientError::Rejected { code, message, .. })) => Outcome::Rejected { code, message },
            Ok(Err(ClientError::Closed)) => Outcome::Lost("the relay closed the connection".into()),
            Ok(Err(error)) => Outcome::Lost(error.to_string()),
        };
    }
}

/// Counts of what happened to the events.
#[derive(Default)]
struct Tally {
    read: u64,
    imported: u64,
    duplicates: u64,
    invalid: u64,
    /// Per code: how many, and the first message.
    rejected: BTreeMap<u16, (u64, String)>,
}

impl Tally {
    fn rejected_total(&self) -> u64 {
        self.rejected.values().map(|(count, _)| count).sum()
    }

    fn short(&self) -> String {
        format!(
            "imported {}, duplicates {}, invalid {}, rejected {}",
            self.imported,
            self.duplicates,
            self.invalid,
            self.rejected_total()
        )
    }

    fn record(&mut self, outcome: Outcome) -> Option<String> {
        match outcome {
            Outcome::Imported => self.imported += 1,
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Rejected { code, message } => {
                self.rejected.entry(code).or_insert((0, message)).0 += 1;
            }
            Outcome::Lost(reason) => return Some(reason),
        }
        None
    }
}

/// A progress bar on a terminal, else a line every few seconds.
enum Progress {
    Bar(ProgressBar),
    Lines { every: Duration, last: Instant },
}

impl Progress {
    fn new(total_bytes: Option<u64>) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { every: Duration::from_secs(2), last: Instant::now() };
        }
        let bar = match total_bytes {
            Some(total) => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                if let Ok(style) =
                    ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {msg}")
                {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar
            }
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        Progress::Bar(bar)
    }

    fn update(&mut self, bytes: u64, tally: &Tally, force: bool) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(bytes);
                bar.set_message(tally.short());
            }
            Progress::Lines { every, last } => {
                if force || last.elapsed() >= *every {
                    *last = Instant::now();
                    eprintln!("import: {} events read ({bytes} bytes): {}", tally.read, tally.short());
                }
            }
        }
    }

    fn note(&self, text: &str) {
        match self {
            Progress::Bar(bar) => bar.suspend(|| eprintln!("{text}")),
            Progress::Lines { .. } => eprintln!("{text}"),
        }
    }

    fn finish(&mut self, bytes: u64, tally: &Tally) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(bytes);
                bar.set_message(tally.short());
                bar.finish();
            }
            Progress::Lines { .. } => self.update(bytes, tally, true),
        }
    }
}

/// One event ready to publish.
struct Pending {
    id: EventId,
    raw: Bytes,
    /// Admin events (ALLOW/REVOKE) are published alone, in order: their order decides
    /// the allowlist.
    admin: bool,
}

/// Reads events from the input, verifying and de-duplicating them.
struct Source {
    splitter: Splitter,
    limits: Limits,
    seen: HashSet<EventId>,
    finished: bool,
    /// Why reading stopped early, if it did.
    broken: Option<String>,
}

impl Source {
    /// The next valid, not yet seen event; `None` at the end (or on a broken input).
    fn next(&mut self, tally: &mut Tally, progress: &Progress) -> Option<Pending> {
        while !self.finished {
            let (offset, raw) = match self.splitter.next() {
                Ok(Some(value)) => value,
                Ok(None) => break,
                Err(error) => {
                    self.broken = Some(error);
                    break;
                }
            };
            tally.read += 1;
            match decode_and_validate(&raw, &self.limits) {
                Ok(event) if !self.seen.insert(event.id) => tally.duplicates += 1,
                Ok(event) => return Some(Pending { id: event.id, raw, admin: is_admin(event.kind) }),
                Err(error) => {
                    tally.invalid += 1;
                    if tally.invalid <= REPORT_INVALID {
                        progress.note(&format!(
                            "skipping invalid event #{} at byte {offset}: {} {}",
                            tally.read,
                            error.code.as_u16(),
                            error.message()
                        ));
                    } else if tally.invalid == REPORT_INVALID + 1 {
                        progress.note("(further invalid events are only counted)");
                    }
                }
            }
        }
        self.finished = true;
        None
    }
}

/// `axon import`.
pub async fn import(args: ImportArgs) -> CliResult {
    let (input, total): (Box<dyn Read>, Option<u64>) = if args.file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file =
            std::fs::File::open(&args.file).map_err(|error| format!("cannot open {}: {error}", args.file.display()))?;
        let size = file.metadata().ok().map(|metadata| metadata.len());
        (Box::new(file), size)
    };
    let key = args.connect.signing_key()?;
    let client = args.connect.connect(&key).await?;
    let mut source = Source {
        splitter: Splitter::new(input),
        limits: Limits::default(),
        seen: HashSet::new(),
        finished: false,
        broken: None,
    };
    let mut progress = Progress::new(total);
    let mut tally = Tally::default();
    let mut in_flight = FuturesUnordered::new();
    let mut lost: Option<String> = None;
    // An admin event waiting for the publishes before it to finish.
    let mut held: Option<Pending> = None;
    // An admin event is in flight: nothing else is sent until it is answered.
    let mut barrier = false;
    let window = args.in_flight as usize;
    loop {
        while lost.is_none() && !barrier && in_flight.len() < window {
            let Some(next) = held.take().or_else(|| source.next(&mut tally, &progress)) else {
                break;
            };
            if next.admin {
                if !in_flight.is_empty() {
                    held = Some(next);
                    break;
                }
                barrier = true;
            }
            in_flight.push(publish_one(&client, next.id, next.raw));
        }
        // Unconstrained: with tokio's cooperative budget, futures that run out of budget
        // are woken in reverse order, which would send publishes out of file order.
        match tokio::task::unconstrained(in_flight.next()).await {
            Some(outcome) => {
                if let Some(reason) = tally.record(outcome) {
                    lost.get_or_insert(reason);
                }
                if in_flight.is_empty() {
                    barrier = false;
                }
            }
            None if held.is_some() && lost.is_none() => {}
            None => break,
        }
        progress.update(source.splitter.offset, &tally, false);
    }
    let splitter = &source.splitter;
    let broken = source.broken.take();
    progress.finish(splitter.offset, &tally);
    let mut summary = vec![tally.short()];
    for (code, (count, message)) in &tally.rejected {
        summary.push(format!("rejected {code}: {count} (first: {message})"));
    }
    let mut out = Output::new(false);
    for line in &summary {
        if let Err(error) = out.line(line) {
            error.into_result()?;
        }
    }
    if let Err(error) = out.flush() {
        error.into_result()?;
    }
    if let Some(reason) = lost {
        return Err(format!(
            "import stopped: {reason}; run it again to continue (events already imported count as duplicates)"
        )
        .into());
    }
    if let Some(reason) = broken {
        return Err(format!("import stopped: {reason}").into());
    }
    let failed = tally.invalid + tally.rejected_total();
    if failed > 0 {
        return Err(format!("{failed} of {} events were not imported", tally.read).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Event;

    /// A reader that hands out one byte at a time, to exercise refills mid-value.
    struct Trickle(std::io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let len = buf.len().min(1);
            self.0.read(&mut buf[..len])
        }
    }

    #[test]
    fn splits_concatenated_events_across_reads() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let events: Vec<Vec<u8>> = (0..3)
            .map(|index| Event::sign(&key, index, 1000, vec![index as u8; 300], vec![]).expect("sign").encode())
            .collect();
        let stream = events.concat();
        let mut splitter = Splitter::new(Box::new(Trickle(std::io::Cursor::new(stream.clone()))));
        let mut offset = 0;
        for event in &events {
            let (at, bytes) = splitter.next().expect("ok").expect("a value");
            assert_eq!(at, offset);
            assert_eq!(&bytes[..], &event[..]);
            offset += event.len() as u64;
        }
        assert_eq!(splitter.next(), Ok(None));

        let mut truncated = stream.clone();
        truncated.truncate(stream.len() - 5);
        let mut splitter = Splitter::new(Box::new(std::io::Cursor::new(truncated)));
        assert!(splitter.next().expect("first").is_some());
        assert!(splitter.next().expect("second").is_some());
        let error = splitter.next().expect_err("truncated third");
        assert!(error.contains(&format!("byte {}", events[0].len() + events[1].len())), "{error}");
    }
}
