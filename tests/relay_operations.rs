//! Operating the relay: SIGHUP reload, metrics, rate and connection limits.

mod common;

use std::time::Duration;

use common::*;

/// Polls `check` every 50 ms for up to 5 s.
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn sighup_reloads_the_allowlist_without_dropping_unaffected_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = ChildRelay::spawn(dir.path(), &child_yaml(dir.path(), &[&admin()], &[&alice(), &mallory()], ""));
    let alice_client = relay.connect(&alice()).await.expect("alice");
    let mallory_client = relay.connect(&mallory()).await.expect("mallory");
    assert_eq!(relay.connect(&bob()).await.err().and_then(|error| error.code()), Some(403));

    // Add bob, drop mallory.
    std::fs::write(&relay.config_path, child_yaml(dir.path(), &[&admin()], &[&alice(), &bob()], "")).expect("rewrite");
    relay.signal("HUP");
    assert!(eventually(|| async { relay.connect(&bob()).await.is_ok() }).await, "bob can connect after SIGHUP");
    alice_client.publish(&event(&alice(), 1000, "still connected", vec![])).await.expect("alice's connection survived");
    let outcome = mallory_client.publish(&event(&mallory(), 1000, "dropped", vec![])).await;
    assert!(outcome.is_err(), "mallory's connection is closed: {outcome:?}");

    // A bad file is refused and the old configuration stays in force.
    std::fs::write(&relay.config_path, "allowlist: [\"not hex\"]\nunknown_key: 1\n").expect("rewrite");
    relay.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.connect(&bob()).await.expect("bob still allowed");
    alice_client.publish(&event(&alice(), 1000, "after bad reload", vec![])).await.expect("alice unaffected");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

#[tokio::test]
async fn metrics_move_as_events_are_accepted_and_rejected() {
    let relay = TestRelay::start().await;
    let (status, before) = http_get(&relay, "/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&before, "axon_events_accepted_total"), 0.0);
    let client = relay.connect(&alice()).await;
    let mut subscription =
        client.subscribe("s", vec![axon_relay::protocol::Filter::default()], None).await.expect("sub");
    subscription.stored().await.expect("eose");
    client.publish(&event(&alice(), 1000, "ok", vec![])).await.expect("publish");
    next_event(&mut subscription).await;
    let mut wrong_id = event(&alice(), 1000, "bad", vec![]);
    wrong_id.id[0] ^= 1;
    client.publish(&wrong_id).await.expect_err("400");
    client.publish(&event(&mallory(), 1000, "not allowed", vec![])).await.expect_err("403");
    let (_, after) = http_get(&relay, "/metrics", None).await;
    assert_eq!(metric(&after, "axon_events_accepted_total"), 1.0);
    assert_eq!(metric(&after, "axon_events_rejected_total{code=\"400\"}"), 1.0);
    assert_eq!(metric(&after, "axon_events_rejected_total{code=\"403\"}"), 1.0);
    assert_eq!(metric(&after, "axon_connections"), 1.0);
    assert_eq!(metric(&after, "axon_authenticated_connections"), 1.0);
    assert_eq!(metric(&after, "axon_subscriptions"), 1.0);
    assert_eq!(metric(&after, "axon_fanout_deliveries_total"), 1.0);
    assert!(metric(&after, "axon_write_batch_events_count") >= 1.0);
    assert!(metric(&after, "axon_commit_seconds_count") >= 1.0);
    assert!(metric(&after, "axon_query_seconds_count") >= 1.0);
    assert!(metric(&after, "axon_database_bytes") > 0.0);
}

#[tokio::test]
async fn publish_rate_limit_answers_429_per_key() {
    let relay = TestRelay::start_with(|config| {
        config.limits.publish_per_second = 1;
        config.limits.publish_burst = 2;
    })
    .await;
    let client = relay.connect(&alice()).await;
    client.publish(&event(&alice(), 1000, "1", vec![])).await.expect("within burst");
    client.publish(&event(&alice(), 1000, "2", vec![])).await.expect("within burst");
    let error = client.publish(&event(&alice(), 1000, "3", vec![])).await.expect_err("over the rate");
    assert_eq!(error.code(), Some(429));
    // Another key has its own bucket.
    relay.connect(&bob()).await.publish(&event(&bob(), 1000, "b", vec![])).await.expect("bob's own bucket");
    let (_, info) = http_get(&relay, "/info", None).await;
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["limits"]["publish_per_second"], 1);
    assert_eq!(info["limits"]["publish_burst"], 2);
}

#[tokio::test]
async fn connections_per_key_are_capped() {
    let relay = TestRelay::start_with(|config| config.limits.max_connections_per_key = 1).await;
    let _first = relay.connect(&alice()).await;
    assert_eq!(relay.try_connect(&alice()).await.err().and_then(|error| error.code()), Some(429));
    relay.connect(&bob()).await;
}

#[tokio::test]
async fn connections_and_handshakes_per_ip_are_capped() {
    let relay = TestRelay::start_with(|config| config.limits.max_connections_per_ip = 1).await;
    let first = relay.connect(&alice()).await;
    let refused = relay.try_connect(&bob()).await.expect_err("second connection from 127.0.0.1");
    assert!(refused.to_string().contains("429"), "{refused}");
    drop(first);
    assert!(eventually(|| async { relay.try_connect(&bob()).await.is_ok() }).await, "a slot frees up");

    let relay = TestRelay::start_with(|config| config.limits.handshakes_per_second_per_ip = 1).await;
    let _first = relay.connect(&alice()).await;
    let refused = relay.try_connect(&bob()).await.expect_err("second handshake within a second");
    assert!(refused.to_string().contains("429"), "{refused}");
}

#[tokio::test]
async fn retention_prunes_by_age_and_count_but_never_admin_events() {
    use axon_relay::relay::config::AgeRule;
    let relay = TestRelay::start_with(|config| {
        config.retention.max_events = 3;
        config.retention.max_age = vec![AgeRule { kinds: [7000, 7999], max_age_secs: 3600 }];
    })
    .await;
    let client = relay.connect(&admin()).await;
    let old_feedback = event_at(&admin(), 7000, now() - 7200, "old", vec![]);
    let new_feedback = event_at(&admin(), 7000, now() - 60, "new", vec![]);
    client.publish(&old_feedback).await.expect("publish");
    client.publish(&new_feedback).await.expect("publish");
    let allow = event(&admin(), 9000, "", vec![tag("p", &hex_of(&mallory()))]);
    client.publish(&allow).await.expect("allow");
    let mut messages = Vec::new();
    for index in 0..4 {
        let message = event(&admin(), 1000, &format!("{index}"), vec![tag("t", "x")]);
        client.publish(&message).await.expect("publish");
        messages.push(message.id);
    }
    let handle = relay.handle.as_ref().expect("running");
    // 1 by age, then 2 by count (7 stored, 1 admin exempt: 5 others, keep 3).
    let pruned = handle.enforce_retention().await.expect("prune");
    let mut all = client.subscribe("all", vec![axon_relay::protocol::Filter::default()], Some(0)).await.expect("sub");
    let left: Vec<_> = all.stored().await.expect("stored").into_iter().map(|(event, _)| event.id).collect();
    assert_eq!(left, vec![allow.id, messages[1], messages[2], messages[3]]);
    assert_eq!(pruned, 3);
    let tag_rows: i64 = rusqlite::Connection::open(&relay.config.db)
        .expect("open")
        .query_row("SELECT COUNT(*) FROM tags WHERE name = 't'", [], |row| row.get(0))
        .expect("count");
    assert_eq!(tag_rows, 3, "tag rows go with their events");
    assert_eq!(handle.enforce_retention().await.expect("prune"), 0, "idempotent");
}
