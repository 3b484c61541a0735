//! Mirrors (spec §17): real relays on loopback copying from each other over real
//! sockets into real SQLite files.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use axon_relay::protocol::Event;
use axon_relay::relay::mirror::MirrorConfig;
use common::*;
use ed25519_dalek::SigningKey;

/// Polls `condition` every 20 ms for at most 30 s (generous: CI machines are shared, and a
/// condition that holds returns at once).
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mirror_key() -> SigningKey {
    key("mirror")
}

fn carol() -> SigningKey {
    key("carol")
}

/// A mirror entry for `upstream` with short reconnect delays, its key file in `dir`.
fn entry(dir: &std::path::Path, upstream: &TestRelay, key: &SigningKey) -> MirrorConfig {
    let path = dir.join(format!("mirror-{}.key", &hex_of(key)[..8]));
    std::fs::write(&path, hex::encode(key.to_bytes())).expect("key file");
    MirrorConfig {
        url: upstream.url.clone(),
        key: path,
        filters: Vec::new(),
        any_author: false,
        retry_min_ms: 20,
        retry_max_ms: 200,
    }
}

/// Starts a relay that mirrors `upstream` with the mirror key.
async fn start_mirror(upstream: &TestRelay, customize: impl FnOnce(&mut MirrorConfig)) -> TestRelay {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = base_config(&dir);
    let mut mirror = entry(dir.path(), upstream, &mirror_key());
    customize(&mut mirror);
    config.mirrors = vec![mirror];
    TestRelay::start_in(dir, config).await
}

/// An upstream that allows the mirror key (and carol) besides the usual keys.
async fn start_upstream() -> TestRelay {
    TestRelay::start_with(|config| config.allowlist.extend([hex_of(&mirror_key()), hex_of(&carol())])).await
}

/// Every stored event of a relay, oldest first, as the admin sees them.
async fn stored(relay: &TestRelay) -> Vec<(Event, u64)> {
    let client = relay.connect(&admin()).await;
    let mut subscription = client.subscribe("all", vec![Default::default()], Some(0)).await.expect("subscribe");
    tokio::time::timeout(Duration::from_secs(30), subscription.stored()).await.expect("stored in time").expect("stored")
}

async fn publish_all(relay: &TestRelay, author: &SigningKey, count: usize, label: &str) -> Vec<Event> {
    let client = relay.connect(author).await;
    let mut events = Vec::new();
    for index in 0..count {
        let event = event(author, 1000, &format!("{label} {index}"), vec![]);
        client.publish(&event).await.expect("published");
        events.push(event);
    }
    events
}

fn state(relay: &TestRelay) -> &axon_relay::relay::RelayState {
    &relay.handle.as_ref().expect("running").state
}

fn metric(relay: &TestRelay, upstream: &str, which: &str) -> i64 {
    let metrics = &state(relay).metrics.mirrors;
    match which {
        "connected" => metrics.connected.with_label_values(&[upstream]).get(),
        "last_seq" => metrics.last_seq.with_label_values(&[upstream]).get(),
        "copied" => metrics.copied.with_label_values(&[upstream]).get() as i64,
        "attempts" => metrics.attempts.with_label_values(&[upstream]).get() as i64,
        reason => metrics.skipped.with_label_values(&[upstream, reason]).get() as i64,
    }
}

fn errors(relay: &TestRelay, upstream: &str, code: &str) -> u64 {
    state(relay).metrics.mirrors.errors.with_label_values(&[upstream, code]).get()
}

async fn cursor(relay: &TestRelay, upstream: &str) -> u64 {
    state(relay).store.upstream_cursor(upstream).await.expect("cursor")
}

async fn wait_for_count(relay: &TestRelay, count: usize) -> Vec<(Event, u64)> {
    let mut last = Vec::new();
    eventually(&format!("{count} events stored"), async || {
        last = stored(relay).await;
        last.len() >= count
    })
    .await;
    last
}

fn assert_no_duplicates(events: &[(Event, u64)]) {
    let ids: HashSet<_> = events.iter().map(|(event, _)| event.id).collect();
    assert_eq!(ids.len(), events.len(), "duplicate ids stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_copies_events_with_the_same_ids_and_signatures() {
    let upstream = start_upstream().await;
    let before = publish_all(&upstream, &alice(), 5, "before").await;
    let mirror = start_mirror(&upstream, |_| {}).await;
    let copied = wait_for_count(&mirror, 5).await;
    assert_eq!(copied.iter().map(|(event, _)| event.clone()).collect::<Vec<_>>(), before);

    // Live: copied events fan out to local subscribers like any accepted event.
    let reader = mirror.connect(&bob()).await;
    let live_only = axon_relay::protocol::Filter { limit: Some(0), ..Default::default() };
    let mut live = reader.subscribe("live", vec![live_only], None).await.expect("subscribe");
    assert!(matches!(next_item(&mut live).await, axon_relay::client::SubItem::Eose));
    eventually("mirror connected", async || metric(&mirror, &upstream.url, "connected") == 1).await;
    let after = publish_all(&upstream, &alice(), 3, "after").await;
    for expected in &after {
        let (event, _) = next_event(&mut live).await;
        assert_eq!(&event, expected, "same id, signature and bytes");
    }
    // Ephemeral kinds: copied live, never stored.
    let progress = event(&alice(), 3000, "progress", vec![]);
    upstream.connect(&alice()).await.publish(&progress).await.expect("ephemeral");
    assert_eq!(next_event(&mut live).await.0, progress);

    let all = wait_for_count(&mirror, 8).await;
    assert_eq!(all.len(), 8, "the ephemeral event is not stored");
    assert_no_duplicates(&all);
    let upstream_last = stored(&upstream).await.last().map(|(_, seq)| *seq).expect("events");
    eventually("cursor at upstream head", async || cursor(&mirror, &upstream.url).await == upstream_last).await;
    assert_eq!(metric(&mirror, &upstream.url, "copied"), 8);

    let (status, info) = http_get(&mirror, "/info", None).await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["mirrors"][0]["url"], upstream.url.as_str());
    assert_eq!(info["mirrors"][0]["connected"], true);
    assert_eq!(info["mirrors"][0]["last_seq"], upstream_last);
    let secret = hex::encode(mirror_key().to_bytes());
    assert!(!info.to_string().contains(&secret) && !info.to_string().contains("mirror-"), "no key in the info");
    // `axon mirror status` reads the same document.
    let url = mirror.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_axon")).args(["mirror", "status", "--url", &url]).output()
    })
    .await
    .expect("join")
    .expect("axon runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains(&upstream.url) && text.contains("connected=true") && text.contains("copied=8"), "{text}");
    let (_, metrics) = http_get(&mirror, "/metrics", None).await;
    assert!(metrics.contains(&format!("axon_mirror_connected{{upstream=\"{}\"}} 1", upstream.url)), "{metrics}");
    assert!(metrics.contains(&format!("axon_mirror_events_copied_total{{upstream=\"{}\"}} 8", upstream.url)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_of_either_side_leave_no_gap_and_no_duplicate() {
    let mut upstream = start_upstream().await;
    let mut expected = publish_all(&upstream, &alice(), 100, "first").await;
    let mirror = start_mirror(&upstream, |_| {}).await;
    // Restart the mirror while it copies and while the upstream takes more events.
    let writer = {
        let client = upstream.connect(&bob()).await;
        tokio::spawn(async move {
            let mut events = Vec::new();
            for index in 0..60 {
                let event = event(&bob(), 1000, &format!("during {index}"), vec![]);
                client.publish(&event).await.expect("published");
                events.push(event);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            events
        })
    };
    eventually("some copied", async || metric(&mirror, &upstream.url, "copied") > 0).await;
    let mirror = mirror.restart().await;
    expected.extend(writer.await.expect("writer"));

    // Restart the upstream on the same port while the mirror is connected live.
    eventually("mirror connected", async || metric(&mirror, &upstream.url, "connected") == 1).await;
    let addr = upstream.handle.as_ref().expect("running").local_addr;
    upstream.stop().await;
    upstream.config.addr = addr.to_string();
    let upstream = TestRelay::start_in(upstream.dir, upstream.config).await;
    expected.extend(publish_all(&upstream, &alice(), 40, "after").await);

    let copied = wait_for_count(&mirror, expected.len()).await;
    assert_eq!(copied.len(), expected.len(), "no duplicate");
    assert_no_duplicates(&copied);
    let copied_ids: HashSet<_> = copied.iter().map(|(event, _)| event.id).collect();
    assert!(expected.iter().all(|event| copied_ids.contains(&event.id)), "no gap");
    let upstream_last = stored(&upstream).await.last().map(|(_, seq)| *seq).expect("events");
    eventually("cursor at upstream head", async || cursor(&mirror, &upstream.url).await == upstream_last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_converges_without_loops() {
    let a = start_upstream().await;
    let b = start_mirror(&a, |_| {}).await;
    // A learns to mirror B on reload (SIGHUP path); B must allow the mirror key.
    b.handle
        .as_ref()
        .expect("running")
        .reload({
            let mut config = b.config.clone();
            config.allowlist.push(hex_of(&mirror_key()));
            config
        })
        .expect("reload b");
    let mut config = a.config.clone();
    config.mirrors = vec![entry(a.dir.path(), &b, &mirror_key())];
    a.handle.as_ref().expect("running").reload(config).expect("reload a");

    publish_all(&a, &alice(), 3, "on a").await;
    publish_all(&b, &bob(), 3, "on b").await;
    let on_a = wait_for_count(&a, 6).await;
    let on_b = wait_for_count(&b, 6).await;
    let ids = |events: &[(Event, u64)]| events.iter().map(|(event, _)| event.id).collect::<HashSet<_>>();
    assert_eq!(ids(&on_a), ids(&on_b));
    // Each side saw its own events come back and dropped them as duplicates.
    eventually("echoes dropped", async || metric(&a, &b.url, "duplicate") == 3 && metric(&b, &a.url, "duplicate") == 3)
        .await;
    // No loop: nothing more is written once both sides hold the six events (a dropped
    // duplicate may use up a seq number, so compare the head before and after a pause).
    let heads = [&a, &b].map(|relay| state(relay).store.last_seq().expect("seq"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (relay, head) in [&a, &b].into_iter().zip(heads) {
        assert_eq!(stored(relay).await.len(), 6, "no loop");
        assert_eq!(state(relay).store.last_seq().expect("seq"), head, "nothing more written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_waits_retry_after_ms_when_rate_limited() {
    let upstream = TestRelay::start_with(|config| {
        config.allowlist.push(hex_of(&mirror_key()));
        config.limits.max_connections_per_key = 1;
    })
    .await;
    // The mirror key's one connection is taken: the mirror's AUTH gets 429 with a hint.
    let blocker = upstream.connect(&mirror_key()).await;
    let mirror = start_mirror(&upstream, |_| {}).await;
    eventually("429 seen", async || errors(&mirror, &upstream.url, "429") >= 1).await;
    let attempts = metric(&mirror, &upstream.url, "attempts");
    // retry_min_ms is 20 ms: without the 1000 ms hint it would have retried many times.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(metric(&mirror, &upstream.url, "attempts"), attempts, "waited for retry_after_ms");
    drop(blocker);
    publish_all(&upstream, &alice(), 1, "x").await;
    wait_for_count(&mirror, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_mirror_key_is_reported_and_not_hammered() {
    let upstream = TestRelay::start().await;
    let admin_client = upstream.connect(&admin()).await;
    let allow = event(&admin(), 9000, "", vec![tag("p", &hex_of(&mirror_key()))]);
    admin_client.publish(&allow).await.expect("allow");
    let mirror = start_mirror(&upstream, |mirror| mirror.retry_max_ms = 1500).await;
    eventually("mirror connected", async || metric(&mirror, &upstream.url, "connected") == 1).await;
    let revoke = event(&admin(), 9001, "", vec![tag("p", &hex_of(&mirror_key()))]);
    admin_client.publish(&revoke).await.expect("revoke");
    eventually("403 reported", async || errors(&mirror, &upstream.url, "403") >= 1).await;
    assert_eq!(metric(&mirror, &upstream.url, "connected"), 0);
    let attempts = metric(&mirror, &upstream.url, "attempts");
    // Refused: retried at the longest delay (1.5 s ± 25 %), not at retry_min_ms (20 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(metric(&mirror, &upstream.url, "attempts"), attempts, "no tight loop after 403");
    eventually("slow retry refused again", async || errors(&mirror, &upstream.url, "403") >= 2).await;
    assert!(metric(&mirror, &upstream.url, "attempts") <= attempts + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_not_allowed_here_is_skipped_and_counted() {
    let upstream = start_upstream().await;
    publish_all(&upstream, &carol(), 2, "carol").await;
    let allowed = publish_all(&upstream, &alice(), 1, "alice").await;
    let mirror = start_mirror(&upstream, |_| {}).await;
    eventually("cursor past carol", async || cursor(&mirror, &upstream.url).await == 3).await;
    let copied = stored(&mirror).await;
    assert_eq!(copied.into_iter().map(|(event, _)| event).collect::<Vec<_>>(), allowed);
    assert_eq!(metric(&mirror, &upstream.url, "author"), 2);

    // `any_author: true` copies them.
    let open = start_mirror(&upstream, |mirror| mirror.any_author = true).await;
    wait_for_count(&open, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_events_on_the_upstream_are_not_applied() {
    // The mirror key is an admin upstream, so it is shown admin events.
    let upstream = TestRelay::start_with(|config| config.admins.push(hex_of(&mirror_key()))).await;
    let allow = event(&admin(), 9000, "", vec![tag("p", &hex_of(&carol()))]);
    upstream.connect(&admin()).await.publish(&allow).await.expect("allow carol upstream");
    publish_all(&upstream, &carol(), 1, "carol").await;
    let mirror = start_mirror(&upstream, |_| {}).await;
    eventually("cursor past the admin event", async || cursor(&mirror, &upstream.url).await == 2).await;
    assert!(stored(&mirror).await.is_empty(), "neither the ALLOW nor carol's event is copied");
    assert_eq!(metric(&mirror, &upstream.url, "admin"), 1);
    assert_eq!(metric(&mirror, &upstream.url, "author"), 1);
    assert!(mirror.try_connect(&carol()).await.is_err(), "carol is not allowed here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_validated_and_removed_on_reload() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = base_config(&dir);
    config.mirrors =
        vec![MirrorConfig { key: dir.path().join("missing.key"), ..entry(dir.path(), &upstream, &mirror_key()) }];
    let error = axon_relay::relay::start(config).await.err().expect("refused");
    assert!(error.to_string().contains("mirrors[0].key"), "{error}");

    let mirror = start_mirror(&upstream, |_| {}).await;
    eventually("mirror connected", async || metric(&mirror, &upstream.url, "connected") == 1).await;
    let mut config = mirror.config.clone();
    config.mirrors.clear();
    mirror.handle.as_ref().expect("running").reload(config).expect("reload");
    eventually("mirror gone upstream", async || {
        let (_, info) = http_get(&mirror, "/info", None).await;
        info.contains("\"mirrors\":[]")
    })
    .await;
    publish_all(&upstream, &alice(), 1, "after removal").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(stored(&mirror).await.is_empty());
}

/// Copy rate during catch-up (a figure, not a check): `cargo test --test relay_mirror
/// copy_rate -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn copy_rate() {
    const EVENTS: usize = 5000;
    let upstream = start_upstream().await;
    let client = upstream.connect(&alice()).await;
    let events: Vec<_> = (0..EVENTS).map(|index| event(&alice(), 1000, &format!("rate {index}"), vec![])).collect();
    for chunk in events.chunks(500) {
        futures_util::future::join_all(chunk.iter().map(|event| client.publish(event))).await;
    }
    let head = state(&upstream).store.last_seq().expect("seq");
    let started = std::time::Instant::now();
    let mirror = start_mirror(&upstream, |_| {}).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while cursor(&mirror, &upstream.url).await < head {
        assert!(tokio::time::Instant::now() < deadline, "copied in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    println!("copied {EVENTS} events in {elapsed:?}: {:.0} events/s", EVENTS as f64 / elapsed.as_secs_f64());
}

/// `last_seq` of the first mirror, from a relay's info document.
async fn info_last_seq(url: &str) -> Option<u64> {
    let document = axon_relay::relay::mirror::info::fetch_document(url).await.ok()?;
    document["mirrors"][0]["last_seq"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_process_added_on_sighup_and_killed_mid_copy_neither_skips_nor_repeats() {
    const EVENTS: usize = 2000;
    let upstream = start_upstream().await;
    let client = upstream.connect(&alice()).await;
    let events: Vec<_> = (0..EVENTS).map(|index| event(&alice(), 1000, &format!("crash {index}"), vec![])).collect();
    for chunk in events.chunks(500) {
        for answer in futures_util::future::join_all(chunk.iter().map(|event| client.publish(event))).await {
            answer.expect("published");
        }
    }
    let head = state(&upstream).store.last_seq().expect("seq");

    // A child relay with no mirrors learns one on SIGHUP; its key path is relative.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mirror.key"), hex::encode(mirror_key().to_bytes())).expect("key file");
    let plain = child_yaml(dir.path(), &[&admin()], &[&alice(), &bob()], "");
    let child = ChildRelay::spawn(dir.path(), &plain);
    let mirrored = child_yaml(
        dir.path(),
        &[&admin()],
        &[&alice(), &bob()],
        &format!("mirrors:\n  - url: \"{}\"\n    key: \"mirror.key\"\n    retry_min_ms: 20\n", upstream.url),
    );
    std::fs::write(&child.config_path, &mirrored).expect("rewrite config");
    child.signal("HUP");
    let mut partial = 0;
    eventually("copy under way", async || {
        partial = info_last_seq(&child.url).await.unwrap_or(0);
        partial > 0
    })
    .await;
    drop(child); // SIGKILL, possibly in the middle of a batch.

    let child = ChildRelay::spawn(dir.path(), &mirrored);
    eventually("copy complete after the crash", async || info_last_seq(&child.url).await == Some(head)).await;
    let reader = child.connect(&admin()).await.expect("connect");
    let mut subscription = reader.subscribe("all", vec![Default::default()], Some(0)).await.expect("subscribe");
    let copied =
        tokio::time::timeout(Duration::from_secs(20), subscription.stored()).await.expect("in time").expect("stored");
    println!("killed after upstream seq {partial} of {head}");
    assert_eq!(copied.len(), EVENTS, "no duplicate, no gap");
    assert_no_duplicates(&copied);
    let expected: HashSet<_> = events.iter().map(|event| event.id).collect();
    assert!(copied.iter().all(|(event, _)| expected.contains(&event.id)));
}
