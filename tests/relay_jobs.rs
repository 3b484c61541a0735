//! Job queues (spec §14) over real sockets and a real database: competing workers,
//! leases, ACK / NACK / EXTEND, PUBLISH with `ack`, expiry, dead jobs, restarts.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axon_relay::client::SubItem;
use axon_relay::protocol::frame::{encode_publish_ack_frame, Extend, JobRef, Nack, Offer, QueueSubscribe, Subscribe};
use axon_relay::protocol::{Event, Filter, Frame, Tag};
use common::*;
use ed25519_dalek::SigningKey;
use tokio::sync::Mutex;

// ---------------------------------------------------------------- helpers

fn job_filter(kinds: &[u16]) -> Filter {
    Filter { kinds: Some(kinds.to_vec()), ..Filter::default() }
}

fn queue_frame(sub_id: &str, group: &str, lease_secs: u64, max_in_flight: u64, after_seq: Option<u64>) -> Frame {
    Frame::QueueSubscribe(QueueSubscribe {
        subscribe: Subscribe { sub_id: sub_id.into(), filters: vec![job_filter(&[5000])], after_seq },
        group: group.into(),
        lease_secs,
        max_in_flight,
    })
}

/// An authenticated worker socket with a queue subscription `q` in `group`.
async fn worker(relay: &TestRelay, key: &SigningKey, group: &str, lease_secs: u64, max_in_flight: u64) -> Raw {
    let mut socket = raw_authed(relay, key).await;
    send_raw(&mut socket, queue_frame("q", group, lease_secs, max_in_flight, None).encode()).await;
    socket
}

/// The next frame, skipping pings.
async fn next_frame(socket: &mut Raw) -> Frame {
    loop {
        match raw_frame(socket).await {
            RawItem::Frame(frame) => return frame,
            RawItem::Ping => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn next_offer(socket: &mut Raw) -> Offer {
    match next_frame(socket).await {
        Frame::Offer(offer) => offer,
        other => panic!("expected an offer, got {other:?}"),
    }
}

/// Nothing arrives for a short while.
async fn quiet(socket: &mut Raw, millis: u64) {
    if let Ok(message) = tokio::time::timeout(Duration::from_millis(millis), next_frame(socket)).await {
        panic!("expected nothing, got {message:?}");
    }
}

fn job_id(offer: &Offer) -> [u8; 32] {
    offer.message.event.decode().expect("offered event decodes").id
}

fn job_ref(job: [u8; 32]) -> JobRef {
    JobRef { sub_id: "q".into(), job }
}

/// A result for `job`: kind 6000 with an `e` tag naming it.
fn result_for(key: &SigningKey, job: [u8; 32], content: &str) -> Event {
    event(key, 6000, content, vec![tag("e", &hex::encode(job))])
}

async fn publish_with_ack(socket: &mut Raw, result: &Event, job: [u8; 32]) {
    send_raw(socket, encode_publish_ack_frame(&result.encode(), &job_ref(job))).await;
}

/// Reads until OK for `id`, keeping offers that arrive first (the next offer may
/// overtake the OK of the completion that freed its slot).
async fn expect_ok_keeping(socket: &mut Raw, id: [u8; 32], offers: &mut std::collections::VecDeque<Offer>) {
    loop {
        match next_frame(socket).await {
            Frame::Ok(ok) => {
                assert_eq!(ok.id, id);
                return;
            }
            Frame::Offer(offer) => offers.push_back(offer),
            other => panic!("expected OK, got {other:?}"),
        }
    }
}

async fn expect_ok(socket: &mut Raw, id: [u8; 32]) {
    match next_frame(socket).await {
        Frame::Ok(ok) => assert_eq!(ok.id, id, "OK names {}", hex::encode(id)),
        other => panic!("expected OK, got {other:?}"),
    }
}

async fn expect_code(socket: &mut Raw, code: u16) -> axon_relay::protocol::frame::ErrorMessage {
    match next_frame(socket).await {
        Frame::Error(error) if error.code == code => error,
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

/// Publishes `count` job requests (kind 5000) as alice; returns their ids in order.
async fn publish_jobs(relay: &TestRelay, count: usize, tags: Vec<Tag>) -> Vec<[u8; 32]> {
    let client = relay.connect(&alice()).await;
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let job = event(&alice(), 5000, &format!("job {index}"), tags.clone());
        client.publish(&job).await.expect("job stored");
        ids.push(job.id);
    }
    ids
}

/// Every stored result (kind 6000): job id (from the `e` tag) → how many.
async fn results_per_job(relay: &TestRelay) -> HashMap<String, usize> {
    let client = relay.connect(&alice()).await;
    let mut subscription =
        client.subscribe("results", vec![job_filter(&[6000])], Some(0)).await.expect("subscribe results");
    let mut counts = HashMap::new();
    for (event, _) in subscription.stored().await.expect("stored results") {
        let job = event.tags.iter().find(|tag| tag.name == "e").and_then(|tag| tag.first_value()).expect("e tag");
        *counts.entry(job.to_owned()).or_insert(0) += 1;
    }
    counts
}

async fn metrics(relay: &TestRelay) -> String {
    http_get(relay, "/metrics", None).await.1
}

fn metric_line(group: &str, state: &str, value: u64) -> String {
    format!("axon_jobs{{group=\"{group}\",state=\"{state}\"}} {value}")
}

// ---------------------------------------------------------------- tests

/// 3 workers × 300 jobs: every job done exactly once, exactly one result per job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_complete_each_of_300_jobs_exactly_once() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 300, Vec::new()).await;
    let completed: Arc<Mutex<Vec<[u8; 32]>>> = Arc::default();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (index, key) in [alice(), bob(), alice()].into_iter().enumerate() {
        let mut socket = worker(&relay, &key, "pool", 60, 4).await;
        let completed = completed.clone();
        tasks.push(tokio::spawn(async move {
            let mut outstanding = HashMap::new();
            loop {
                if completed.lock().await.len() >= 300 && outstanding.is_empty() {
                    return;
                }
                let Ok(frame) = tokio::time::timeout(Duration::from_millis(100), next_frame(&mut socket)).await else {
                    continue;
                };
                match frame {
                    Frame::Offer(offer) => {
                        let job = job_id(&offer);
                        let result = result_for(&key, job, &format!("worker {index}"));
                        outstanding.insert(result.id, job);
                        publish_with_ack(&mut socket, &result, job).await;
                    }
                    Frame::Ok(ok) => {
                        let job = outstanding.remove(&ok.id).expect("OK for a result this worker sent");
                        completed.lock().await.push(job);
                    }
                    other => panic!("worker {index}: unexpected {other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("workers finish").expect("worker ok");
    }
    let elapsed = started.elapsed();
    eprintln!("300 jobs, 3 workers: {elapsed:?} ({:.0} jobs/s end to end)", 300.0 / elapsed.as_secs_f64());
    let completed = completed.lock().await.clone();
    assert_eq!(completed.len(), 300, "one completion per job");
    assert_eq!(completed.iter().collect::<HashSet<_>>(), ids.iter().collect::<HashSet<_>>());
    let results = results_per_job(&relay).await;
    assert_eq!(results.len(), 300);
    assert!(results.values().all(|count| *count == 1), "exactly one result per job");
    let text = metrics(&relay).await;
    assert!(text.contains(&metric_line("pool", "done", 300)), "{text}");
    assert!(text.contains(&metric_line("pool", "pending", 0)), "{text}");
}

/// A worker whose connection drops while holding leases: its jobs go to the others at once.
#[tokio::test]
async fn jobs_of_a_killed_worker_are_offered_to_the_others_at_once() {
    let relay = TestRelay::start().await;
    publish_jobs(&relay, 3, Vec::new()).await;
    let mut doomed = worker(&relay, &alice(), "g", 60, 3).await;
    let mut held = HashSet::new();
    for _ in 0..3 {
        held.insert(job_id(&next_offer(&mut doomed).await));
    }
    let mut survivor = worker(&relay, &bob(), "g", 60, 3).await;
    quiet(&mut survivor, 200).await;
    drop(doomed);
    let mut again = HashSet::new();
    for _ in 0..3 {
        let offer = tokio::time::timeout(Duration::from_secs(2), next_offer(&mut survivor)).await.expect("at once");
        assert_eq!(offer.lease.attempt, 2);
        again.insert(job_id(&offer));
    }
    assert_eq!(again, held);
}

/// A hung worker: its job is re-offered after the lease; its late result is then 412 and
/// not stored.
#[tokio::test]
async fn a_hung_workers_job_is_reoffered_after_the_lease_and_its_late_result_refused() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    let mut hung = worker(&relay, &alice(), "g", 1, 1).await;
    let first = next_offer(&mut hung).await;
    assert_eq!((job_id(&first), first.lease.attempt), (ids[0], 1));
    let mut healthy = worker(&relay, &bob(), "g", 60, 1).await;
    let second = tokio::time::timeout(Duration::from_secs(3), next_offer(&mut healthy)).await.expect("re-offered");
    assert_eq!((job_id(&second), second.lease.attempt), (ids[0], 2));
    assert!(second.lease.until_ms > first.lease.until_ms);
    let late = result_for(&alice(), ids[0], "late");
    publish_with_ack(&mut hung, &late, ids[0]).await;
    let error = expect_code(&mut hung, 412).await;
    assert_eq!((error.id, error.sub_id.as_deref()), (Some(late.id), Some("q")));
    assert!(error.message.starts_with("lease-lost:"), "{}", error.message);
    let on_time = result_for(&bob(), ids[0], "on time");
    publish_with_ack(&mut healthy, &on_time, ids[0]).await;
    expect_ok(&mut healthy, on_time.id).await;
    assert_eq!(results_per_job(&relay).await.get(&hex::encode(ids[0])), Some(&1));
}

/// A retried PUBLISH with `ack` that already succeeded gets 409 (success).
#[tokio::test]
async fn a_retried_completing_publish_gets_409() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    next_offer(&mut socket).await;
    let result = result_for(&alice(), ids[0], "done");
    publish_with_ack(&mut socket, &result, ids[0]).await;
    expect_ok(&mut socket, result.id).await;
    publish_with_ack(&mut socket, &result, ids[0]).await;
    let error = expect_code(&mut socket, 409).await;
    assert_eq!(error.id, Some(result.id));
    // ACK of a completed job: the lease is gone.
    send_raw(&mut socket, Frame::Ack(job_ref(ids[0])).encode()).await;
    expect_code(&mut socket, 412).await;
}

/// NACK with a delay: the job comes back only after it, as the next attempt.
#[tokio::test]
async fn a_nacked_job_is_offered_again_after_the_delay() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    next_offer(&mut socket).await;
    let nack = Nack { job: job_ref(ids[0]), delay_secs: Some(1) };
    send_raw(&mut socket, Frame::Nack(nack).encode()).await;
    expect_ok(&mut socket, ids[0]).await;
    let sent = std::time::Instant::now();
    let again = next_offer(&mut socket).await;
    assert!(sent.elapsed() >= Duration::from_millis(800), "not before the delay ({:?})", sent.elapsed());
    assert_eq!((job_id(&again), again.lease.attempt), (ids[0], 2));
    send_raw(&mut socket, Frame::Ack(job_ref(ids[0])).encode()).await;
    expect_ok(&mut socket, ids[0]).await;
}

/// EXTEND renews the lease from now and answers with the new end.
#[tokio::test]
async fn extend_renews_the_lease() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    let mut socket = worker(&relay, &alice(), "g", 1, 1).await;
    let offer = next_offer(&mut socket).await;
    let extend = Extend { job: job_ref(ids[0]), lease_secs: Some(30) };
    send_raw(&mut socket, Frame::Extend(extend).encode()).await;
    match next_frame(&mut socket).await {
        Frame::OkLease(ok) => {
            assert_eq!(ok.id, ids[0]);
            assert!(ok.until_ms >= offer.lease.until_ms + 28_000, "{} vs {}", ok.until_ms, offer.lease.until_ms);
        }
        other => panic!("expected OK with until_ms, got {other:?}"),
    }
    // The old 1 s lease would have lapsed by now; the job is not re-offered.
    quiet(&mut socket, 1500).await;
    send_raw(&mut socket, Frame::Ack(job_ref(ids[0])).encode()).await;
    expect_ok(&mut socket, ids[0]).await;
}

/// After `jobs.max_attempts` offers without completion the job is dead: never offered
/// again and counted in metrics.
#[tokio::test]
async fn a_job_dies_after_max_attempts() {
    let relay = TestRelay::start_with(|config| config.jobs.max_attempts = 2).await;
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    for attempt in 1..=2 {
        let offer = next_offer(&mut socket).await;
        assert_eq!(offer.lease.attempt, attempt);
        send_raw(&mut socket, Frame::Nack(Nack { job: job_ref(ids[0]), delay_secs: None }).encode()).await;
        expect_ok(&mut socket, ids[0]).await;
    }
    quiet(&mut socket, 300).await;
    let text = metrics(&relay).await;
    assert!(text.contains(&metric_line("g", "dead", 1)), "{text}");
    assert!(text.contains(&metric_line("g", "redeliveries", 1)), "{text}");
    // Dead survives a restart.
    let relay = relay.restart().await;
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    quiet(&mut socket, 300).await;
    assert!(metrics(&relay).await.contains(&metric_line("g", "dead", 1)));
    // And in the operator view.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .args(["jobs", "--db"])
        .arg(&relay.config.db)
        .output()
        .expect("run axon jobs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("group g start 0 done 0 dead 1"), "{text}");
    assert!(text.contains(&format!("dead g 1 {} attempts 2", hex::encode(ids[0]))), "{text}");
}

/// A REQUEUE (kind 9002) from an admin gives a dead job a fresh start (attempt 1),
/// committed with the event: it survives a restart. Only a dead job can be re-queued
/// (409), only by an admin (403), with one group and one job named (400); `axon jobs
/// requeue --all` re-queues every dead job of a group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_requeues_a_dead_job() {
    let relay = TestRelay::start_with(|config| config.jobs.max_attempts = 1).await;
    let ids = publish_jobs(&relay, 2, Vec::new()).await;
    let requeue = |key: &SigningKey, group: &str, job: [u8; 32]| {
        event(key, 9002, "", vec![tag("group", group), tag("e", &hex::encode(job))])
    };
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    let first = next_offer(&mut socket).await;
    let admin_client = relay.connect(&admin()).await;
    // Leased, not dead: nothing to re-queue.
    let early = admin_client.publish(&requeue(&admin(), "g", job_id(&first))).await.expect_err("409");
    assert_eq!(early.code(), Some(409), "{early}");
    let mut offer = first;
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            offer = next_offer(&mut socket).await;
        }
        assert_eq!(job_id(&offer), *id);
        send_raw(&mut socket, Frame::Nack(Nack { job: job_ref(*id), delay_secs: None }).encode()).await;
        expect_ok(&mut socket, *id).await;
    }
    drop(socket);
    assert!(metrics(&relay).await.contains(&metric_line("g", "dead", 2)));

    let alice_client = relay.connect(&alice()).await;
    let refused = alice_client.publish(&requeue(&alice(), "g", ids[0])).await.expect_err("403");
    assert_eq!(refused.code(), Some(403), "{refused}");
    let malformed = event(&admin(), 9002, "", vec![tag("group", "g")]);
    let refused = admin_client.publish(&malformed).await.expect_err("400");
    assert_eq!(refused.code(), Some(400), "{refused}");
    let refused = admin_client.publish(&requeue(&admin(), "other", ids[0])).await.expect_err("no such group");
    assert_eq!(refused.code(), Some(409), "{refused}");
    assert!(metrics(&relay).await.contains(&metric_line("g", "dead", 2)), "refusals change nothing");

    let accepted = requeue(&admin(), "g", ids[0]);
    admin_client.publish(&accepted).await.expect("requeued");
    let text = metrics(&relay).await;
    assert!(text.contains(&metric_line("g", "dead", 1)) && text.contains(&metric_line("g", "pending", 1)), "{text}");
    let retried = admin_client.publish(&accepted).await.expect_err("a retry is a duplicate");
    assert_eq!(retried.code(), Some(409));

    // Committed with the event: after a restart the job is pending, not dead.
    let relay = relay.restart().await;
    let text = metrics(&relay).await;
    assert!(text.contains(&metric_line("g", "dead", 1)), "{text}");
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    let offer = next_offer(&mut socket).await;
    assert_eq!((job_id(&offer), offer.lease.attempt), (ids[0], 1), "a fresh start");
    let result = result_for(&alice(), ids[0], "done at last");
    publish_with_ack(&mut socket, &result, ids[0]).await;
    expect_ok(&mut socket, result.id).await;
    drop(socket);

    // The CLI: every dead job of the group (the second one), read from the database.
    let key_file = relay.dir.path().join("admin.key");
    std::fs::write(&key_file, hex::encode(admin().to_bytes())).expect("write key");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .args(["jobs", "requeue", "--group", "g", "--all", "--url", &relay.url, "--relay-url", RELAY_URL, "--key"])
        .arg(&key_file)
        .arg("--db")
        .arg(&relay.config.db)
        .output()
        .expect("run axon jobs requeue");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with(&format!("requeued g {} ", hex::encode(ids[1]))), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    let offer = next_offer(&mut socket).await;
    assert_eq!((job_id(&offer), offer.lease.attempt), (ids[1], 1));
    // Naming a job that is not dead fails and says why.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .args(["jobs", "requeue", "--group", "g", &hex::encode(ids[0])])
        .args(["--url", &relay.url, "--relay-url", RELAY_URL, "--key"])
        .arg(&key_file)
        .output()
        .expect("run axon jobs requeue");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr} {}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("is not dead in group"), "{stderr}");
}

/// Memory holds only the job requests some group may still offer: none before any group
/// exists, none once each is done; a group created later still gets every stored job
/// (loaded from the database), and a restart loads only the unfinished ones.
#[tokio::test]
async fn only_jobs_a_group_may_still_offer_are_held_in_memory() {
    async fn held(relay: &TestRelay) -> String {
        let text = metrics(relay).await;
        text.lines().find(|line| line.starts_with("axon_job_requests_held ")).unwrap_or("missing").to_owned()
    }
    async fn held_becomes(relay: &TestRelay, expected: u64) {
        let wanted = format!("axon_job_requests_held {expected}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while held(relay).await != wanted {
            assert!(std::time::Instant::now() < deadline, "{} (wanted {wanted})", held(relay).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    async fn complete_all(socket: &mut Raw, count: usize) -> HashSet<[u8; 32]> {
        let (mut done, mut offers) = (HashSet::new(), std::collections::VecDeque::new());
        for _ in 0..count {
            let offer = match offers.pop_front() {
                Some(offer) => offer,
                None => next_offer(socket).await,
            };
            let job = job_id(&offer);
            send_raw(socket, Frame::Ack(job_ref(job)).encode()).await;
            expect_ok_keeping(socket, job, &mut offers).await;
            done.insert(job);
        }
        done
    }
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 5, Vec::new()).await;
    held_becomes(&relay, 0).await;
    let mut first = worker(&relay, &alice(), "first", 60, 1).await;
    assert_eq!(complete_all(&mut first, 5).await, ids.iter().copied().collect());
    held_becomes(&relay, 0).await;
    // A new group starts at the beginning of the log: every job again, from the database.
    let mut second = worker(&relay, &bob(), "second", 60, 1).await;
    assert_eq!(complete_all(&mut second, 2).await.len(), 2);
    quiet(&mut first, 200).await;
    held_becomes(&relay, 3).await;
    drop((first, second));
    let relay = relay.restart().await;
    held_becomes(&relay, 3).await;
    let mut second = worker(&relay, &bob(), "second", 60, 1).await;
    assert_eq!(complete_all(&mut second, 3).await.len(), 3);
    held_becomes(&relay, 0).await;
    let text = metrics(&relay).await;
    assert!(text.contains(&metric_line("first", "done", 5)) && text.contains(&metric_line("second", "done", 5)));
}

/// A restart mid-run: nothing done twice, nothing lost; the unfinished lease is offered
/// again with the next attempt number.
#[tokio::test]
async fn a_restart_mid_run_loses_nothing_and_repeats_nothing() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 20, Vec::new()).await;
    let mut done = Vec::new();
    let mut offers = std::collections::VecDeque::new();
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    for _ in 0..10 {
        let offer = match offers.pop_front() {
            Some(offer) => offer,
            None => next_offer(&mut socket).await,
        };
        let job = job_id(&offer);
        let result = result_for(&alice(), job, "before");
        publish_with_ack(&mut socket, &result, job).await;
        expect_ok_keeping(&mut socket, result.id, &mut offers).await;
        done.push(job);
    }
    let held = match offers.pop_front() {
        Some(offer) => offer,
        None => next_offer(&mut socket).await,
    };
    drop(socket);
    let relay = relay.restart().await;
    let mut socket = worker(&relay, &bob(), "g", 60, 1).await;
    let again = next_offer(&mut socket).await;
    assert_eq!((job_id(&again), again.lease.attempt), (job_id(&held), 2), "the held job first, as attempt 2");
    let mut job = job_id(&again);
    loop {
        assert!(!done.contains(&job), "a done job was offered again");
        let result = result_for(&bob(), job, "after");
        publish_with_ack(&mut socket, &result, job).await;
        expect_ok_keeping(&mut socket, result.id, &mut offers).await;
        done.push(job);
        if done.len() == 20 {
            break;
        }
        job = job_id(&match offers.pop_front() {
            Some(offer) => offer,
            None => next_offer(&mut socket).await,
        });
    }
    quiet(&mut socket, 300).await;
    assert_eq!(done.iter().collect::<HashSet<_>>(), ids.iter().collect::<HashSet<_>>());
    let results = results_per_job(&relay).await;
    assert_eq!(results.len(), 20);
    assert!(results.values().all(|count| *count == 1));
}

/// Two groups on the same jobs: each does each job once.
#[tokio::test]
async fn two_groups_each_do_each_job_once() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 5, Vec::new()).await;
    for group in ["a", "b"] {
        let mut socket = worker(&relay, &alice(), group, 60, 5).await;
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(job_id(&next_offer(&mut socket).await));
        }
        assert_eq!(seen, ids, "oldest first by seq");
        for job in &seen {
            send_raw(&mut socket, Frame::Ack(job_ref(*job)).encode()).await;
            expect_ok(&mut socket, *job).await;
        }
        quiet(&mut socket, 200).await;
    }
}

/// A new group with `after_seq` starts after it.
#[tokio::test]
async fn a_new_group_starts_after_after_seq() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let old = event(&alice(), 5000, "old", Vec::new());
    let start = client.publish(&old).await.expect("stored").expect("seq");
    let new = event(&alice(), 5000, "new", Vec::new());
    client.publish(&new).await.expect("stored");
    let mut socket = raw_authed(&relay, &bob()).await;
    send_raw(&mut socket, queue_frame("q", "fresh", 60, 5, Some(start)).encode()).await;
    assert_eq!(job_id(&next_offer(&mut socket).await), new.id);
    quiet(&mut socket, 200).await;
}

/// Expired job requests are never offered; ACK after expiry is 410.
#[tokio::test]
async fn expired_jobs_are_never_offered_and_their_ack_is_410() {
    let relay = TestRelay::start().await;
    let expiring = vec![tag("expires_at", &(now() + 2).to_string())];
    let ids = publish_jobs(&relay, 1, expiring).await;
    let mut taker = worker(&relay, &alice(), "taker", 60, 1).await;
    assert_eq!(job_id(&next_offer(&mut taker).await), ids[0]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut late = worker(&relay, &bob(), "late", 60, 1).await;
    quiet(&mut late, 300).await;
    send_raw(&mut taker, Frame::Ack(job_ref(ids[0])).encode()).await;
    let error = expect_code(&mut taker, 410).await;
    assert_eq!(error.id, Some(ids[0]));
}

/// `max_in_flight` bounds a member's unfinished leases.
#[tokio::test]
async fn max_in_flight_is_respected() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 5, Vec::new()).await;
    let mut socket = worker(&relay, &alice(), "g", 60, 2).await;
    let first = job_id(&next_offer(&mut socket).await);
    let second = job_id(&next_offer(&mut socket).await);
    assert_eq!([first, second], [ids[0], ids[1]]);
    quiet(&mut socket, 300).await;
    send_raw(&mut socket, Frame::Ack(job_ref(first)).encode()).await;
    let mut offers = std::collections::VecDeque::new();
    expect_ok_keeping(&mut socket, first, &mut offers).await;
    let third = match offers.pop_front() {
        Some(offer) => offer,
        None => next_offer(&mut socket).await,
    };
    assert_eq!(job_id(&third), ids[2]);
    quiet(&mut socket, 300).await;
}

/// Bad input gets its precise code and changes nothing.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    let mut socket = raw_authed(&relay, &alice()).await;
    // Filters that allow non-job kinds, or no kinds at all.
    for filters in
        [vec![job_filter(&[5000, 1000])], vec![Filter::default()], vec![job_filter(&[5000]), job_filter(&[6000])]]
    {
        let frame = Frame::QueueSubscribe(QueueSubscribe {
            subscribe: Subscribe { sub_id: "bad".into(), filters, after_seq: None },
            group: "g".into(),
            lease_secs: 60,
            max_in_flight: 1,
        });
        send_raw(&mut socket, frame.encode()).await;
        let error = expect_code(&mut socket, 400).await;
        assert_eq!(error.sub_id.as_deref(), Some("bad"));
    }
    // An ACK for a job this subscription does not hold.
    send_raw(&mut socket, Frame::Ack(JobRef { sub_id: "bad".into(), job: ids[0] }).encode()).await;
    let error = expect_code(&mut socket, 412).await;
    assert_eq!((error.id, error.sub_id.as_deref()), (Some(ids[0]), Some("bad")));
    // Malformed: a 31-byte job id; a lease_secs out of range.
    let mut malformed = Vec::new();
    rmp::encode::write_array_len(&mut malformed, 2).expect("encode");
    rmp::encode::write_uint(&mut malformed, 5).expect("encode");
    rmp::encode::write_map_len(&mut malformed, 2).expect("encode");
    rmp::encode::write_str(&mut malformed, "sub_id").expect("encode");
    rmp::encode::write_str(&mut malformed, "q").expect("encode");
    rmp::encode::write_str(&mut malformed, "job").expect("encode");
    rmp::encode::write_bin(&mut malformed, &[0; 31]).expect("encode");
    send_raw(&mut socket, malformed).await;
    expect_code(&mut socket, 400).await;
    send_raw(&mut socket, queue_frame("q", "g", 0, 1, None).encode()).await;
    expect_code(&mut socket, 400).await;
    // A malformed `ack` on a PUBLISH: the event is not stored.
    let result = result_for(&alice(), ids[0], "x");
    let mut frame = Vec::new();
    rmp::encode::write_array_len(&mut frame, 2).expect("encode");
    rmp::encode::write_uint(&mut frame, 4).expect("encode");
    rmp::encode::write_map_len(&mut frame, 2).expect("encode");
    rmp::encode::write_str(&mut frame, "event").expect("encode");
    frame.extend_from_slice(&result.encode());
    rmp::encode::write_str(&mut frame, "ack").expect("encode");
    rmp::encode::write_map_len(&mut frame, 2).expect("encode");
    rmp::encode::write_str(&mut frame, "sub_id").expect("encode");
    rmp::encode::write_str(&mut frame, "q").expect("encode");
    rmp::encode::write_str(&mut frame, "job").expect("encode");
    rmp::encode::write_bin(&mut frame, &ids[0][..31]).expect("encode");
    send_raw(&mut socket, frame).await;
    expect_code(&mut socket, 400).await;
    // A completing PUBLISH for a job not held: 412, not stored.
    publish_with_ack(&mut socket, &result, ids[0]).await;
    expect_code(&mut socket, 412).await;
    assert!(results_per_job(&relay).await.is_empty(), "nothing stored");
    // Nothing changed: the job is still there for a real member, as attempt 1.
    let mut member = worker(&relay, &bob(), "g", 60, 1).await;
    let offer = next_offer(&mut member).await;
    assert_eq!((job_id(&offer), offer.lease.attempt), (ids[0], 1));
}

/// Jobs committed while members wait are offered promptly; a plain subscription still
/// sees every job request.
#[tokio::test]
async fn new_jobs_reach_waiting_members_promptly() {
    let relay = TestRelay::start().await;
    let mut socket = worker(&relay, &alice(), "g", 60, 1).await;
    let observer = relay.connect(&bob()).await;
    let mut all = observer.subscribe("all", vec![job_filter(&[5000])], None).await.expect("subscribe");
    assert!(matches!(next_item(&mut all).await, SubItem::Eose));
    quiet(&mut socket, 100).await;
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    assert_eq!(job_id(&next_offer(&mut socket).await), ids[0]);
    assert_eq!(next_event(&mut all).await.0.id, ids[0]);
}

/// The Rust client's worker API: queue subscription, EXTEND, NACK, PUBLISH with `ack`.
#[tokio::test]
async fn the_client_worker_api_drives_a_job_to_completion() {
    use axon_relay::client::QueueItem;
    let relay = TestRelay::start().await;
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    let client = relay.connect(&bob()).await;
    let mut jobs = client.subscribe_queue("w", "api", vec![job_filter(&[5000])], 30, 1).await.expect("join");
    let next_job = |item: Option<QueueItem>| match item {
        Some(QueueItem::Job { event, lease, .. }) => (event.id, lease),
        other => panic!("expected a job, got {other:?}"),
    };
    let (job, lease) = next_job(tokio::time::timeout(Duration::from_secs(5), jobs.next()).await.expect("offer"));
    assert_eq!((job, lease.attempt), (ids[0], 1));
    let until = client.extend("w", job, Some(120)).await.expect("extend");
    assert!(until > lease.until_ms);
    client.nack("w", job, None).await.expect("nack");
    let (again, lease) = next_job(tokio::time::timeout(Duration::from_secs(5), jobs.next()).await.expect("offer"));
    assert_eq!((again, lease.attempt), (ids[0], 2));
    let result = result_for(&bob(), job, "42");
    assert!(client.publish_ack(&result, "w", job).await.expect("stored and done").is_some());
    let retry = client.publish_ack(&result, "w", job).await.expect_err("duplicate");
    assert_eq!(retry.code(), Some(409));
    assert_eq!(client.ack("w", job).await.expect_err("not held").code(), Some(412));
    assert_eq!(results_per_job(&relay).await.get(&hex::encode(job)), Some(&1));
}

/// Property-style: workers that randomly crash, stall past their lease or finish, over a
/// few seeds; every job ends done exactly once with exactly one stored result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_crashes_and_stalls_never_complete_a_job_twice() {
    use rand::{Rng, SeedableRng};
    // Crashes and stalls (and a loaded machine's 1 s leases lapsing) cost attempts: with
    // the default 5 a job could die and the run would never finish. Dying is tested apart.
    let relay = TestRelay::start_with(|config| config.jobs.max_attempts = 1_000).await;
    let ids = publish_jobs(&relay, 40, Vec::new()).await;
    let completed: Arc<Mutex<Vec<[u8; 32]>>> = Arc::default();
    let mut tasks = Vec::new();
    for seed in 0..3u64 {
        let completed = completed.clone();
        let url_relay = relay.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let key = if seed % 2 == 0 { alice() } else { bob() };
            'connections: loop {
                if completed.lock().await.len() >= 40 {
                    return;
                }
                let client = axon_relay::client::Client::connect(&url_relay, RELAY_URL, &key).await.expect("connect");
                let mut jobs =
                    client.subscribe_queue("q", "chaos", vec![job_filter(&[5000])], 1, 2).await.expect("join");
                loop {
                    let item = tokio::time::timeout(Duration::from_millis(500), jobs.next()).await;
                    let Ok(Some(axon_relay::client::QueueItem::Job { event, .. })) = item else {
                        if completed.lock().await.len() >= 40 {
                            return;
                        }
                        continue;
                    };
                    match rng.gen_range(0..10) {
                        0 => continue 'connections, // crash: the connection drops with its leases
                        1 => tokio::time::sleep(Duration::from_millis(1100)).await, // stall past the lease
                        _ => {}
                    }
                    let result = result_for(&key, event.id, &format!("seed {seed}"));
                    match client.publish_ack(&result, "q", event.id).await {
                        Ok(_) => completed.lock().await.push(event.id),
                        // 412: the job went to someone else meanwhile. 409: this worker
                        // already completed it with the identical result (a stale
                        // offer of the same job, re-offered to it while it stalled).
                        Err(error) => assert!(matches!(error.code(), Some(412 | 409)), "{error}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("workers finish").expect("worker ok");
    }
    let completed = completed.lock().await.clone();
    assert_eq!(completed.len(), 40, "each job completed once");
    assert_eq!(completed.iter().collect::<HashSet<_>>(), ids.iter().collect::<HashSet<_>>());
    let results = results_per_job(&relay).await;
    assert_eq!(results.len(), 40);
    assert!(results.values().all(|count| *count == 1), "one result per job");
    assert!(metrics(&relay).await.contains(&metric_line("chaos", "done", 40)));
}

/// `axon work` runs a real shell command per job (content on stdin, stdout as the
/// result with `ack`); a failing command NACKs; `axon request` prints the first result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axon_work_runs_a_shell_command_per_job_and_axon_request_gets_the_result() {
    let relay = TestRelay::start().await;
    let key_file = relay.dir.path().join("worker.key");
    std::fs::write(&key_file, hex::encode(bob().to_bytes())).expect("write key");
    let url = relay.url.clone();
    let axon = move |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_axon"));
        command.args(args).args(["--url", &url, "--relay-url", RELAY_URL, "--key"]).arg(&key_file);
        command
    };
    let ids = publish_jobs(&relay, 2, Vec::new()).await;
    // Uppercases the content; fails (exit 3) for nothing here.
    let worker = axon(&["work", "--group", "shell", "--kind", "5000", "--max-jobs", "3"])
        .args(["--", "sh", "-c", "tr a-z A-Z"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn axon work");
    let request_command = axon.clone();
    let request = tokio::task::spawn_blocking(move || {
        request_command(&["request", "--kind", "5000", "--timeout", "20s", "ping me"])
            .output()
            .expect("run axon request")
    });
    let output = request.await.expect("request task");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "PING ME");
    let worked = tokio::task::spawn_blocking(move || worker.wait_with_output().expect("axon work ends"));
    let worked = tokio::time::timeout(Duration::from_secs(20), worked).await.expect("three jobs").expect("task");
    assert!(worked.status.success());
    let lines = String::from_utf8_lossy(&worked.stdout).lines().count();
    assert_eq!(lines, 3, "one line per completed job");
    let results = results_per_job(&relay).await;
    for id in ids {
        assert_eq!(results.get(&hex::encode(id)), Some(&1));
    }
}

/// `axon work` survives a relay restart: it reconnects (with backoff), joins the queue
/// again and goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axon_work_reconnects_after_the_relay_restarts() {
    let mut relay = TestRelay::start().await;
    let key_file = relay.dir.path().join("worker.key");
    std::fs::write(&key_file, hex::encode(bob().to_bytes())).expect("write key");
    let worker = std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
        .args(["work", "--group", "restarting", "--kind", "5000", "--max-jobs", "2"])
        .args(["--url", &relay.url, "--relay-url", RELAY_URL, "--key"])
        .arg(&key_file)
        .args(["--", "sh", "-c", "tr a-z A-Z"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn axon work");
    let first = publish_jobs(&relay, 1, Vec::new()).await[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !results_per_job(&relay).await.contains_key(&hex::encode(first)) {
        assert!(std::time::Instant::now() < deadline, "the first job was never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same port, the same database: the worker's connection drops, then it returns.
    let addr = relay.url.trim_start_matches("ws://").to_owned();
    relay.stop().await;
    let mut config = relay.config.clone();
    config.addr = addr;
    let relay = TestRelay::start_in(relay.dir, config).await;
    let second = event(&alice(), 5000, "after the restart", Vec::new());
    relay.connect(&alice()).await.publish(&second).await.expect("stored");
    let worked = tokio::task::spawn_blocking(move || worker.wait_with_output().expect("axon work ends"));
    let worked = tokio::time::timeout(Duration::from_secs(30), worked).await.expect("both jobs done").expect("task");
    let stderr = String::from_utf8_lossy(&worked.stderr);
    assert!(worked.status.success(), "{stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    let results = results_per_job(&relay).await;
    assert_eq!(results.get(&hex::encode(first)), Some(&1));
    assert_eq!(results.get(&hex::encode(second.id)), Some(&1));
}

/// `axon work` gives a job back when the command fails: it is offered again (attempt 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axon_work_nacks_when_the_command_fails() {
    let relay = TestRelay::start().await;
    let key_file = relay.dir.path().join("worker.key");
    std::fs::write(&key_file, hex::encode(bob().to_bytes())).expect("write key");
    publish_jobs(&relay, 1, Vec::new()).await;
    let output = tokio::task::spawn_blocking({
        let url = relay.url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
                .args(["work", "--group", "failing", "--kind", "5000", "--max-jobs", "1"])
                .args(["--url", &url, "--relay-url", RELAY_URL, "--key"])
                .arg(&key_file)
                .args(["--", "sh", "-c", "exit 3"])
                .output()
                .expect("run axon work")
        }
    })
    .await
    .expect("task");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("failed"));
    // The job is pending again (after its 1 s backoff) for the next worker, as attempt 2.
    let mut socket = worker(&relay, &alice(), "failing", 60, 1).await;
    let offer = tokio::time::timeout(Duration::from_secs(5), next_offer(&mut socket)).await.expect("offered again");
    assert_eq!(offer.lease.attempt, 2);
}

/// Offers go only to members whose filters match: members of one group with different
/// kinds each get only their own jobs, and a job no member matches waits for one.
#[tokio::test]
async fn offers_go_only_to_members_whose_filters_match() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let five_thousand_one = event(&alice(), 5001, "other kind", Vec::new());
    client.publish(&five_thousand_one).await.expect("stored");
    let ids = publish_jobs(&relay, 1, Vec::new()).await;
    let mut plain = worker(&relay, &alice(), "mixed", 60, 5).await;
    assert_eq!(job_id(&next_offer(&mut plain).await), ids[0]);
    quiet(&mut plain, 200).await;
    let mut other = raw_authed(&relay, &bob()).await;
    let frame = Frame::QueueSubscribe(QueueSubscribe {
        subscribe: Subscribe { sub_id: "o".into(), filters: vec![job_filter(&[5001])], after_seq: None },
        group: "mixed".into(),
        lease_secs: 60,
        max_in_flight: 5,
    });
    send_raw(&mut other, frame.encode()).await;
    assert_eq!(job_id(&next_offer(&mut other).await), five_thousand_one.id);
    quiet(&mut other, 200).await;
}

/// Job requests deleted by retention leave the queues.
#[tokio::test]
async fn job_requests_deleted_by_retention_are_not_offered() {
    use axon_relay::relay::config::AgeRule;
    let relay = TestRelay::start_with(|config| {
        config.retention.max_age = vec![AgeRule { kinds: [5000, 5999], max_age_secs: 60 }];
    })
    .await;
    let client = relay.connect(&alice()).await;
    let old = event_at(&alice(), 5000, now() - 600, "stale", Vec::new());
    client.publish(&old).await.expect("stored");
    let fresh = publish_jobs(&relay, 1, Vec::new()).await;
    let deleted = relay.handle.as_ref().expect("running").enforce_retention().await.expect("retention");
    assert_eq!(deleted, 1);
    let mut socket = worker(&relay, &bob(), "g", 60, 5).await;
    assert_eq!(job_id(&next_offer(&mut socket).await), fresh[0]);
    quiet(&mut socket, 300).await;
}
