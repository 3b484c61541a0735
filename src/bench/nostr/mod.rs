//! The Nostr side of `--nostr ws://...`: the ingest, fan-out and query scenarios with the
//! same event count, content size, tag shape (t, p, e), connections and pipelining, spoken
//! as NIP-01 JSON with BIP-340 Schnorr signatures (k256), so Axon and a Nostr relay are
//! measured in one run on one machine. Built only with the `nostr-bench` feature.
//!
//! Differences that cannot be avoided: Nostr has no AUTH on these relays (connections are
//! anonymous), no `after_seq` replay (the replay query is skipped), and content is a
//! string, so the index/timestamp head is written as 32 hex characters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use k256::schnorr::SigningKey;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::clock::unix_now;

use super::fanout::{
    await_deliveries, on_own_thread, scheduled_publisher, FanoutParams, PubOutcome, Shared, SubOutcome,
};
use super::gen::{cores, pseudo_id, run_nonce};
use super::ingest::{ConnOutcome, IngestParams};
use super::query::{QueryKind, QueryParams, Series, KINDS, TOPICS};
use super::stats::{Latency, Metrics, Report};
use super::BenchResult;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a Nostr query may take to reach EOSE before it is counted as dropped.
const NOSTR_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A signed NIP-01 event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NostrEvent {
    /// Hex SHA-256 of the serialized event.
    pub id: String,
    /// Hex x-only public key.
    pub pubkey: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Kind.
    pub kind: u16,
    /// Tags as arrays of strings.
    pub tags: Vec<Vec<String>>,
    /// Content.
    pub content: String,
    /// Hex BIP-340 signature over the id.
    pub sig: String,
}

/// A Nostr key: the secret key and its hex x-only public key.
#[derive(Clone)]
pub struct NostrKey {
    secret: SigningKey,
    /// Hex x-only public key.
    pub pubkey: String,
}

impl NostrKey {
    /// A fresh random key.
    pub fn random() -> NostrKey {
        let secret = SigningKey::random(&mut rand::rngs::OsRng);
        let pubkey = hex::encode(secret.verifying_key().to_bytes());
        NostrKey { secret, pubkey }
    }
}

/// What to sign.
pub struct NostrDraft {
    /// Index into the key list.
    pub key: usize,
    /// Unix seconds.
    pub created_at: u64,
    /// Kind.
    pub kind: u16,
    /// Tags.
    pub tags: Vec<Vec<String>>,
    /// Content.
    pub content: String,
}

/// Signs an event (NIP-01 id, BIP-340 signature).
pub fn sign(key: &NostrKey, draft: NostrDraft) -> BenchResult<NostrEvent> {
    let serialized =
        serde_json::to_string(&(0, &key.pubkey, draft.created_at, draft.kind, &draft.tags, &draft.content))?;
    let id: [u8; 32] = Sha256::digest(serialized.as_bytes()).into();
    let aux: [u8; 32] = rand::random();
    let sig = key.secret.sign_raw(&id, &aux).map_err(|error| format!("BIP-340 signing failed: {error}"))?;
    Ok(NostrEvent {
        id: hex::encode(id),
        pubkey: key.pubkey.clone(),
        created_at: draft.created_at,
        kind: draft.kind,
        tags: draft.tags,
        content: draft.content,
        sig: hex::encode(sig.to_bytes()),
    })
}

/// Checks an event's id and signature (for tests and the ceiling of this side).
pub fn verify(event: &NostrEvent) -> BenchResult<()> {
    let serialized =
        serde_json::to_string(&(0, &event.pubkey, event.created_at, event.kind, &event.tags, &event.content))?;
    let id: [u8; 32] = Sha256::digest(serialized.as_bytes()).into();
    if hex::encode(id) != event.id {
        return Err("id mismatch".into());
    }
    let mut pubkey = [0u8; 32];
    hex::decode_to_slice(&event.pubkey, &mut pubkey)?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&event.sig, &mut sig)?;
    let key = k256::schnorr::VerifyingKey::from_bytes(&pubkey).map_err(|error| format!("bad pubkey: {error}"))?;
    let sig = k256::schnorr::Signature::try_from(&sig[..]).map_err(|error| format!("bad signature: {error}"))?;
    key.verify_raw(&id, &sig).map_err(|error| format!("signature does not verify: {error}"))?;
    Ok(())
}

/// An event ready to send: its id and the whole `["EVENT", {...}]` text.
#[derive(Debug, Clone)]
pub struct NostrPrepared {
    /// Hex id (routes the OK).
    pub id: String,
    /// The client message.
    pub frame: String,
}

/// Signs `count` drafts on every core, in index order, and builds the EVENT messages.
pub fn prepare_all<F>(count: usize, keys: &[NostrKey], draft: F) -> BenchResult<Vec<NostrPrepared>>
where
    F: Fn(usize) -> NostrDraft + Sync,
{
    let threads = cores().min(count.max(1));
    let chunk = count.div_ceil(threads).max(1);
    let draft = &draft;
    let parts: Vec<BenchResult<Vec<NostrPrepared>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || -> BenchResult<Vec<NostrPrepared>> {
                    let range = (thread * chunk).min(count)..((thread + 1) * chunk).min(count);
                    let mut out = Vec::with_capacity(range.len());
                    for index in range {
                        let draft = draft(index);
                        let key = keys.get(draft.key).ok_or("draft names a key that does not exist")?;
                        let event = sign(key, draft)?;
                        out.push(NostrPrepared { frame: serde_json::to_string(&("EVENT", &event))?, id: event.id });
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Err("a signing thread panicked".into())))
            .collect()
    });
    let mut all = Vec::with_capacity(count);
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

/// Content of `size` characters (at least 32): `head` and `second` as 16 hex digits each,
/// then the same printable filler as the Axon side.
pub fn content(size: usize, head: u64, second: u64) -> String {
    let mut out = format!("{head:016x}{second:016x}");
    out.extend((32..size).map(|index| (b'a' + (index % 26) as u8) as char));
    out
}

fn content_index(content: &str) -> Option<u64> {
    u64::from_str_radix(content.get(0..16)?, 16).ok()
}

/// The benchmark's tag shape as Nostr tags.
pub fn tags(topic: &str, p: &str, e: &[u8; 32]) -> Vec<Vec<String>> {
    vec![vec!["t".into(), topic.into()], vec!["p".into(), p.into()], vec!["e".into(), hex::encode(e)]]
}

async fn open(url: &str, disable_nagle: bool) -> BenchResult<Socket> {
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, disable_nagle)
        .await
        .map_err(|error| format!("cannot connect to {url}: {error}"))?;
    Ok(socket)
}

type Routes = Arc<Mutex<HashMap<String, oneshot::Sender<Result<(), String>>>>>;

fn routes_lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Result<(), String>>>> {
    match routes.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A pipelining publisher: like [`crate::client::Client`], many EVENTs in flight, each
/// resolved by its OK.
pub struct NostrClient {
    sender: mpsc::Sender<Message>,
    routes: Routes,
}

#[derive(Deserialize)]
struct OkMessage(IgnoredAny, String, bool, #[serde(default)] String);

impl NostrClient {
    /// Connects (Nagle as the Axon client: on).
    pub async fn connect(url: &str) -> BenchResult<NostrClient> {
        let (mut sink, mut stream) = open(url, false).await?.split();
        let (sender, mut outgoing) = mpsc::channel::<Message>(1024);
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let sent = if outgoing.is_empty() { sink.send(message).await } else { sink.feed(message).await };
                if sent.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let routes: Routes = Arc::new(Mutex::new(HashMap::new()));
        let reader_routes = routes.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                if !text.starts_with("[\"OK\"") {
                    continue;
                }
                if let Ok(OkMessage(_, id, accepted, reason)) = serde_json::from_str::<OkMessage>(&text) {
                    if let Some(reply) = routes_lock(&reader_routes).remove(&id) {
                        let _ = reply.send(if accepted { Ok(()) } else { Err(reason) });
                    }
                }
            }
            routes_lock(&reader_routes).clear();
        });
        Ok(NostrClient { sender, routes })
    }

    /// Sends an EVENT and waits for its OK.
    pub async fn publish(&self, event: &NostrPrepared) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        routes_lock(&self.routes).insert(event.id.clone(), reply);
        self.sender.send(Message::Text(event.frame.clone())).await.map_err(|_| "closed".to_owned())?;
        answer.await.map_err(|_| "closed".to_owned())?
    }
}

fn error_key(reason: &str) -> String {
    reason.split(':').next().unwrap_or(reason).trim().to_owned()
}

async fn pipeline(client: &NostrClient, events: Vec<NostrPrepared>, in_flight: usize) -> ConnOutcome {
    let mut outcome = ConnOutcome { latencies: Vec::with_capacity(events.len()), ..ConnOutcome::default() };
    let mut queue = events.into_iter();
    let mut pending = FuturesUnordered::new();
    loop {
        while pending.len() < in_flight.max(1) {
            let Some(event) = queue.next() else { break };
            pending.push(async move {
                let started = Instant::now();
                let result = client.publish(&event).await;
                (started.elapsed(), result)
            });
        }
        match pending.next().await {
            Some((elapsed, Ok(()))) => outcome.latencies.push(elapsed.as_nanos() as u64),
            Some((_, Err(reason))) => *outcome.errors.entry(error_key(&reason)).or_default() += 1,
            None => break,
        }
    }
    outcome
}

/// One ingest run against a Nostr relay.
pub async fn ingest(url: &str, params: &IngestParams) -> BenchResult<Report> {
    let connections = params.connections.max(1);
    let keys: Vec<NostrKey> = (0..connections).map(|_| NostrKey::random()).collect();
    let nonce = run_nonce();
    let topic = format!("ingest-{nonce}");
    let now = unix_now();
    let events = tokio::task::block_in_place(|| {
        prepare_all(params.events, &keys, |index| NostrDraft {
            key: index % connections,
            created_at: now,
            kind: 1000,
            content: content(params.content_bytes, index as u64, now),
            tags: tags(&topic, &keys[(index + 1) % connections].pubkey, &pseudo_id(&nonce, index as u64)),
        })
    })?;
    let mut parts: Vec<Vec<NostrPrepared>> = (0..connections).map(|_| Vec::new()).collect();
    for (index, event) in events.into_iter().enumerate() {
        parts[index % connections].push(event);
    }
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(NostrClient::connect(url).await?);
    }
    let started = Instant::now();
    let in_flight = params.in_flight;
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(parts)
        .map(|(client, events)| tokio::spawn(async move { pipeline(&client, events, in_flight).await }))
        .collect();
    let outcomes = super::join_tasks(tasks, "a publishing task").await?;
    let mut report = super::ingest::report(params, outcomes, started.elapsed());
    report.details.push("NIP-01 JSON, BIP-340 signatures, no AUTH".into());
    Ok(report)
}

/// A lean reader/writer of whole text messages.
struct NostrLean {
    socket: Socket,
}

#[derive(Deserialize)]
struct EventMessage<'a>(IgnoredAny, IgnoredAny, #[serde(borrow)] LiteEvent<'a>);

#[derive(Deserialize)]
struct LiteEvent<'a> {
    #[serde(borrow)]
    content: std::borrow::Cow<'a, str>,
}

/// What a relay message is, as far as the benchmark cares.
enum Incoming {
    Event(Option<u64>),
    Eose(String),
    Closed(String, String),
    Notice(String),
    Other,
}

fn classify(text: &str) -> Incoming {
    if text.starts_with("[\"EVENT\"") {
        let index = serde_json::from_str::<EventMessage>(text)
            .ok()
            .and_then(|EventMessage(_, _, event)| content_index(&event.content));
        return Incoming::Event(index);
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(text) {
        Ok(items) => match items.first().and_then(|kind| kind.as_str()) {
            Some("EOSE") => Incoming::Eose(items.get(1).and_then(|id| id.as_str()).unwrap_or("").to_owned()),
            Some("CLOSED") => Incoming::Closed(
                items.get(1).and_then(|id| id.as_str()).unwrap_or("").to_owned(),
                items.get(2).and_then(|reason| reason.as_str()).unwrap_or("").to_owned(),
            ),
            Some("NOTICE") => Incoming::Notice(items.get(1).map(|notice| notice.to_string()).unwrap_or_default()),
            _ => Incoming::Other,
        },
        Err(_) => Incoming::Other,
    }
}

impl NostrLean {
    async fn connect(url: &str) -> BenchResult<NostrLean> {
        Ok(NostrLean { socket: open(url, true).await? })
    }

    async fn send(&mut self, text: String) -> BenchResult<()> {
        self.socket.send(Message::Text(text)).await.map_err(|error| format!("send failed: {error}").into())
    }

    async fn next(&mut self) -> BenchResult<Option<Incoming>> {
        loop {
            match self.socket.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(error)) => return Err(format!("receive failed: {error}").into()),
                Some(Ok(Message::Text(text))) => return Ok(Some(classify(&text))),
                Some(Ok(_)) => continue,
            }
        }
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

async fn subscriber(
    mut conn: NostrLean,
    sub_ids: Vec<String>,
    filter: serde_json::Value,
    shared: Arc<Shared>,
    ready: oneshot::Sender<BenchResult<()>>,
    mut stop: watch::Receiver<bool>,
) -> SubOutcome {
    let mut outcome = SubOutcome::default();
    let setup = async {
        for sub_id in &sub_ids {
            conn.send(serde_json::to_string(&("REQ", sub_id, &filter))?).await?;
        }
        let mut eose = 0;
        while eose < sub_ids.len() {
            match conn.next().await? {
                Some(Incoming::Eose(_)) => eose += 1,
                Some(Incoming::Closed(sub_id, reason)) => {
                    return Err(format!("REQ {sub_id} closed by the relay: {reason}").into())
                }
                Some(_) => {}
                None => return Err("connection closed during REQ".into()),
            }
        }
        BenchResult::Ok(())
    };
    let result = setup.await;
    let failed = result.is_err();
    let _ = ready.send(result);
    if failed {
        return outcome;
    }
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.changed() => break,
            message = conn.next() => message,
        };
        match message {
            Ok(Some(Incoming::Event(index))) => {
                if let Some(latency) = shared.delivered_index(index) {
                    outcome.latencies.push(latency);
                }
                outcome.deliveries += 1;
                outcome.last_delivery = shared.now_ns();
            }
            Ok(Some(Incoming::Closed(_, reason))) => {
                outcome.overflows += 1;
                outcome.errors.push(format!("CLOSED: {reason}"));
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(error) => {
                outcome.errors.push(error.to_string());
                break;
            }
        }
    }
    conn.close().await;
    outcome
}

async fn publisher(
    client: Arc<NostrClient>,
    events: Vec<(usize, u64, NostrPrepared)>,
    shared: Arc<Shared>,
    start_ns: u64,
) -> PubOutcome {
    scheduled_publisher(events, shared, start_ns, move |event: NostrPrepared| {
        let client = client.clone();
        async move { client.publish(&event).await }
    })
    .await
}

/// One fan-out run against a Nostr relay.
pub async fn fanout(url: &str, params: &FanoutParams) -> BenchResult<Report> {
    let publishers = params.publishers.max(1);
    let keys: Vec<NostrKey> = (0..publishers + 1).map(|_| NostrKey::random()).collect();
    let nonce = run_nonce();
    let topic = format!("fanout-{nonce}");
    let now = unix_now();
    let total = params.total_events();
    let events = tokio::task::block_in_place(|| {
        prepare_all(total, &keys, |index| NostrDraft {
            key: index % publishers,
            created_at: now,
            kind: 1000,
            content: content(params.content_bytes.max(32), index as u64, params.offset_ns(index)),
            tags: tags(&topic, &keys[publishers].pubkey, &pseudo_id(&nonce, index as u64)),
        })
    })?;
    let mut per_publisher: Vec<Vec<(usize, u64, NostrPrepared)>> = (0..publishers).map(|_| Vec::new()).collect();
    for (index, event) in events.into_iter().enumerate() {
        per_publisher[index % publishers].push((index, params.offset_ns(index), event));
    }
    let shared = Arc::new(Shared::new(total));
    // The topic is new, so nothing stored matches: the subscriptions are live only.
    let filter = serde_json::json!({"kinds": [1000], "#t": [topic]});
    let (stop, stopped) = watch::channel(false);
    let mut subscriber_tasks = Vec::new();
    let mut readiness = Vec::new();
    let mut next_sub = 0;
    for count in params.split() {
        let conn = NostrLean::connect(url).await?;
        let sub_ids: Vec<String> = (next_sub..next_sub + count).map(|n| format!("f{n}")).collect();
        next_sub += count;
        let (ready, is_ready) = oneshot::channel();
        readiness.push(is_ready);
        subscriber_tasks.push(tokio::spawn(subscriber(
            conn,
            sub_ids,
            filter.clone(),
            shared.clone(),
            ready,
            stopped.clone(),
        )));
    }
    for is_ready in readiness {
        is_ready
            .await
            .map_err(|_| "a subscriber stopped during setup")?
            .map_err(|error| format!("subscriber setup failed: {error}"))?;
    }
    let (url, publishing) = (url.to_owned(), shared.clone());
    let pubs = on_own_thread(move || async move {
        let mut clients = Vec::with_capacity(publishers);
        for _ in 0..publishers {
            clients.push(Arc::new(NostrClient::connect(&url).await?));
        }
        let start_ns = publishing.now_ns() + 100_000_000;
        let runs = clients
            .into_iter()
            .zip(per_publisher)
            .map(|(client, events)| publisher(client, events, publishing.clone(), start_ns));
        Ok(futures_util::future::join_all(runs).await)
    })
    .await?;
    await_deliveries(&shared, total as u64 * params.subscribers as u64, Duration::from_secs(3)).await;
    let _ = stop.send(true);
    let subs = super::join_tasks(subscriber_tasks, "a subscriber").await?;
    let mut report = super::fanout::report(params, &shared, subs, pubs);
    report.details.push("NIP-01 JSON; overflows = subscriptions the relay CLOSED".into());
    Ok(report)
}

/// A prefilled Nostr relay and what it holds.
pub struct NostrQuerySession {
    url: String,
    authors: Vec<String>,
    topics: Vec<String>,
    ids: Vec<String>,
}

/// Publishes the prefill (not timed) over 4 pipelined connections.
pub async fn prepare_query(url: &str, params: &QueryParams) -> BenchResult<NostrQuerySession> {
    let keys: Vec<NostrKey> = (0..super::query::AUTHORS).map(|_| NostrKey::random()).collect();
    let prefix = format!("q-{}", run_nonce());
    let started = Instant::now();
    let clients = [
        NostrClient::connect(url).await?,
        NostrClient::connect(url).await?,
        NostrClient::connect(url).await?,
        NostrClient::connect(url).await?,
    ];
    let clients: Vec<Arc<NostrClient>> = clients.into_iter().map(Arc::new).collect();
    let mut ids = Vec::new();
    let mut start = 0;
    let prefill = params.prefill;
    let now = unix_now();
    while start < prefill {
        let end = (start + 50_000).min(prefill);
        let events = tokio::task::block_in_place(|| {
            prepare_all(end - start, &keys, |offset| {
                let index = start + offset;
                NostrDraft {
                    key: index % keys.len(),
                    created_at: now.saturating_sub((prefill - index) as u64),
                    kind: KINDS[(index / keys.len()) % KINDS.len()],
                    content: content(params.content_bytes.max(32), index as u64, now),
                    tags: tags(
                        &format!("{prefix}-{}", index % TOPICS),
                        &keys[(index + 1) % keys.len()].pubkey,
                        &pseudo_id(&prefix, index as u64),
                    ),
                }
            })
        })?;
        for (offset, event) in events.iter().enumerate() {
            if (start + offset).is_multiple_of(97) {
                ids.push(event.id.clone());
            }
        }
        let mut parts: Vec<Vec<NostrPrepared>> = clients.iter().map(|_| Vec::new()).collect();
        for (index, event) in events.into_iter().enumerate() {
            parts[index % clients.len()].push(event);
        }
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .zip(parts)
            .map(|(client, part)| tokio::spawn(async move { pipeline(&client, part, 256).await }))
            .collect();
        for outcome in super::join_tasks(tasks, "a prefill task").await? {
            if !outcome.errors.is_empty() {
                return Err(format!("the Nostr relay refused prefill events: {:?}", outcome.errors).into());
            }
        }
        start = end;
    }
    println!(
        "nostr: prefilled {} events in {:.1} s (published, not timed)",
        super::stats::thousands(prefill as f64),
        started.elapsed().as_secs_f64()
    );
    Ok(NostrQuerySession {
        url: url.to_owned(),
        authors: keys.iter().map(|key| key.pubkey.clone()).collect(),
        topics: (0..TOPICS).map(|topic| format!("{prefix}-{topic}")).collect(),
        ids,
    })
}

impl NostrQuerySession {
    fn filter(&self, kind: QueryKind, params: &QueryParams, n: usize) -> Option<serde_json::Value> {
        let authors = self.authors.len().max(1);
        match kind {
            QueryKind::AuthorKind => Some(serde_json::json!({
                "authors": [self.authors[n % authors]],
                "kinds": [KINDS[(n / authors) % KINDS.len()]],
                "limit": params.limit,
            })),
            QueryKind::Tag => Some(serde_json::json!({
                "#t": [self.topics[(n * 7) % self.topics.len()]],
                "limit": params.limit,
            })),
            QueryKind::Ids => Some(serde_json::json!({"ids": [self.ids[(n * 7919) % self.ids.len().max(1)]]})),
            QueryKind::Replay => None,
        }
    }

    async fn series(
        &self,
        conn: &mut NostrLean,
        kind: QueryKind,
        params: &QueryParams,
        worker: usize,
    ) -> BenchResult<Series> {
        let mut series = Series::default();
        let mut latencies = Vec::new();
        let (mut low, mut high) = (usize::MAX, 0);
        for n in 0..5 + params.queries {
            let Some(filter) = self.filter(kind, params, n + worker * 1009) else {
                return Ok(series);
            };
            let sub_id = format!("q{n}");
            let started = Instant::now();
            conn.send(serde_json::to_string(&("REQ", &sub_id, filter))?).await?;
            let mut events = 0;
            let answered = tokio::time::timeout(NOSTR_QUERY_TIMEOUT, async {
                loop {
                    match conn.next().await? {
                        Some(Incoming::Event(_)) => events += 1,
                        Some(Incoming::Eose(done)) if done == sub_id => return BenchResult::Ok(()),
                        Some(Incoming::Closed(done, reason)) if done == sub_id => {
                            return Err(format!("query closed by the relay: {reason}").into())
                        }
                        Some(Incoming::Notice(notice)) => return Err(format!("relay NOTICE: {notice}").into()),
                        Some(_) => {}
                        None => return Err("connection closed during a query".into()),
                    }
                }
            })
            .await;
            let elapsed = started.elapsed().as_nanos() as u64;
            conn.send(serde_json::to_string(&("CLOSE", &sub_id))?).await?;
            match answered {
                Ok(result) => result?,
                Err(_) => {
                    // nostr-rs-relay occasionally never answers a REQ with EOSE: count it.
                    series.dropped += 1;
                    continue;
                }
            }
            if n >= 5 {
                latencies.push(elapsed);
                low = low.min(events);
                high = high.max(events);
            }
        }
        series.latencies = latencies;
        series.events = (low, high);
        Ok(series)
    }

    /// One measured run (the replay query has no Nostr equivalent and is skipped).
    pub async fn run(&self, params: &QueryParams) -> BenchResult<Report> {
        let mut report =
            Report { metrics: Metrics::default(), details: Vec::new(), summarize: super::query::summarize };
        report.metrics.set("prefill", params.prefill as f64);
        report.metrics.set("connections", params.connections as f64);
        for kind in [QueryKind::AuthorKind, QueryKind::Tag, QueryKind::Ids] {
            let mut conn = NostrLean::connect(&self.url).await?;
            let sequential = self.series(&mut conn, kind, params, 0).await?;
            conn.close().await;
            let mut conns = Vec::new();
            for _ in 0..params.connections.max(1) {
                conns.push(NostrLean::connect(&self.url).await?);
            }
            let started = Instant::now();
            let results = futures_util::future::join_all(
                conns.iter_mut().enumerate().map(|(worker, conn)| self.series(conn, kind, params, worker + 1)),
            )
            .await;
            let elapsed = started.elapsed();
            let mut samples = Vec::new();
            let mut dropped = sequential.dropped;
            for result in results {
                let series = result?;
                dropped += series.dropped;
                samples.extend(series.latencies);
            }
            if dropped > 0 {
                report.details.push(format!(
                    "{}: {dropped} queries got no EOSE within {} s (not counted in latency or q/s)",
                    kind.name(),
                    NOSTR_QUERY_TIMEOUT.as_secs()
                ));
                let total_dropped = report.metrics.get("dropped_queries") + dropped as f64;
                report.metrics.set("dropped_queries", total_dropped);
            }
            let total = samples.len() as u64 + (5 * conns.len()) as u64;
            super::query::add_kind(&mut report, kind, sequential, (total, elapsed, Latency::of(samples)));
            for conn in conns {
                conn.close().await;
            }
        }
        report.details.push("replay: no after_seq in NIP-01; not measured".into());
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_events_verify() {
        let key = NostrKey::random();
        let event = sign(
            &key,
            NostrDraft {
                key: 0,
                created_at: 1_700_000_000,
                kind: 1000,
                tags: tags("topic", &key.pubkey, &[3; 32]),
                content: content(200, 7, 9),
            },
        )
        .expect("sign");
        assert_eq!(event.content.len(), 200);
        assert_eq!(content_index(&event.content), Some(7));
        assert!(verify(&event).is_ok());
        let mut forged = event.clone();
        forged.content.push('x');
        assert!(verify(&forged).is_err());
    }

    #[test]
    fn classifies_relay_messages() {
        let text = r#"["EVENT","s",{"id":"x","content":"00000000000000050000000000000000abc","kind":1}]"#;
        assert!(matches!(classify(text), Incoming::Event(Some(5))));
        assert!(matches!(classify(r#"["EOSE","s"]"#), Incoming::Eose(id) if id == "s"));
        assert!(matches!(classify(r#"["NOTICE","hi"]"#), Incoming::Notice(_)));
        assert!(matches!(classify(r#"["AUTH","x"]"#), Incoming::Other));
    }
}
