//! Spec §10: live allowlist administration with ALLOW (9000) and REVOKE (9001).

mod common;

use axon_relay::client::{Client, ClientError};
use axon_relay::protocol::{Event, Filter, Tag};
use common::*;
use ed25519_dalek::SigningKey;

fn admin_event(kind: u16, keys: &[&SigningKey]) -> Event {
    let tags = keys.iter().map(|key| tag("p", &hex_of(key))).collect();
    event(&admin(), kind, "", tags)
}

async fn rejected_with(client: &Client, event: &Event) -> u16 {
    client.publish(event).await.expect_err("must be rejected").code().expect("a relay code")
}

#[tokio::test]
async fn allow_applies_before_ok_and_persists_across_restart() {
    let relay = TestRelay::start().await;
    assert_eq!(relay.try_connect(&mallory()).await.err().and_then(|error| error.code()), Some(403));
    let admin_client = relay.connect(&admin()).await;
    admin_client.publish(&admin_event(9000, &[&mallory()])).await.expect("allow");
    // Applied before the OK: connecting right away works.
    let mallory_client = relay.connect(&mallory()).await;
    mallory_client.publish(&event(&mallory(), 1000, "hello", vec![])).await.expect("mallory may publish");
    drop((admin_client, mallory_client));
    let relay = relay.restart().await;
    relay.connect(&mallory()).await; // replayed from the stored admin log
}

#[tokio::test]
async fn revoke_closes_open_connections_at_once_and_persists() {
    let relay = TestRelay::start().await;
    let admin_client = relay.connect(&admin()).await;
    admin_client.publish(&admin_event(9000, &[&mallory()])).await.expect("allow");
    let mut mallory_socket = raw_authed(&relay, &mallory()).await;
    admin_client.publish(&admin_event(9001, &[&mallory()])).await.expect("revoke");
    assert!(expect_error(&mut mallory_socket, 403).await.message.starts_with("restricted:"));
    expect_close(&mut mallory_socket, 1008).await;
    assert_eq!(relay.try_connect(&mallory()).await.err().and_then(|error| error.code()), Some(403));
    // Events by a revoked author are refused even from an allowed connection.
    let alice_client = relay.connect(&alice()).await;
    assert_eq!(rejected_with(&alice_client, &event(&mallory(), 1000, "x", vec![])).await, 403);
    drop((admin_client, alice_client));
    let relay = relay.restart().await;
    assert_eq!(relay.try_connect(&mallory()).await.err().and_then(|error| error.code()), Some(403));
}

#[tokio::test]
async fn revoking_a_relay_yaml_key_is_409_and_changes_nothing() {
    let relay = TestRelay::start().await;
    let admin_client = relay.connect(&admin()).await;
    let alice_client = relay.connect(&alice()).await;
    admin_client.publish(&admin_event(9000, &[&mallory()])).await.expect("allow");
    assert_eq!(rejected_with(&admin_client, &admin_event(9001, &[&alice()])).await, 409);
    assert_eq!(rejected_with(&admin_client, &admin_event(9001, &[&admin()])).await, 409);
    // All or nothing: mallory is named together with a fixed key, so stays allowed.
    assert_eq!(rejected_with(&admin_client, &admin_event(9001, &[&mallory(), &alice()])).await, 409);
    relay.connect(&mallory()).await;
    alice_client.publish(&event(&alice(), 1000, "still here", vec![])).await.expect("alice unaffected");
}

#[tokio::test]
async fn admin_event_content_rules() {
    let relay = TestRelay::start().await;
    let admin_client = relay.connect(&admin()).await;
    let upper = event(&admin(), 9000, "", vec![tag("p", &hex_of(&mallory()).to_uppercase())]);
    assert_eq!(rejected_with(&admin_client, &upper).await, 400);
    let short = event(&admin(), 9000, "", vec![tag("p", "abcd")]);
    assert_eq!(rejected_with(&admin_client, &short).await, 400);
    assert_eq!(rejected_with(&admin_client, &event(&admin(), 9000, "", vec![])).await, 400);
    let expiring =
        event(&admin(), 9000, "", vec![tag("p", &hex_of(&mallory())), tag("expires_at", &(now() + 60).to_string())]);
    assert_eq!(rejected_with(&admin_client, &expiring).await, 400, "an expiring ALLOW would be undone at restart");
    let value_less = event(&admin(), 9000, "", vec![Tag::new::<_, String>("p", [])]);
    assert_eq!(rejected_with(&admin_client, &value_less).await, 400);
    let alice_client = relay.connect(&alice()).await;
    let by_alice = event(&alice(), 9000, "", vec![tag("p", &hex_of(&mallory()))]);
    assert_eq!(rejected_with(&alice_client, &by_alice).await, 403);
    assert_eq!(relay.try_connect(&mallory()).await.err().and_then(|error| error.code()), Some(403));
}

#[tokio::test]
async fn the_admin_log_is_readable_by_admins_only() {
    let relay = TestRelay::start().await;
    let admin_client = relay.connect(&admin()).await;
    let allow = admin_event(9000, &[&mallory()]);
    let revoke = admin_event(9001, &[&mallory()]);
    admin_client.publish(&allow).await.expect("allow");
    admin_client.publish(&revoke).await.expect("revoke");
    let log_filter = vec![Filter { kinds: Some(vec![9000, 9001]), ..Filter::default() }];
    let mut log = admin_client.subscribe("log", log_filter.clone(), Some(0)).await.expect("sub");
    let ids: Vec<_> = log.stored().await.expect("log").into_iter().map(|(event, _)| event.id).collect();
    assert_eq!(ids, vec![allow.id, revoke.id], "oldest first: a signed audit log");
    let alice_client = relay.connect(&alice()).await;
    let mut hidden = alice_client.subscribe("log", log_filter, Some(0)).await.expect("sub");
    assert!(hidden.stored().await.expect("stored").is_empty());
}

#[tokio::test]
async fn a_revoked_client_sees_its_publish_fail() {
    let relay = TestRelay::start().await;
    let admin_client = relay.connect(&admin()).await;
    admin_client.publish(&admin_event(9000, &[&mallory()])).await.expect("allow");
    let mallory_client = relay.connect(&mallory()).await;
    admin_client.publish(&admin_event(9001, &[&mallory()])).await.expect("revoke");
    let outcome = mallory_client.publish(&event(&mallory(), 1000, "too late", vec![])).await;
    assert!(matches!(outcome, Err(ClientError::Closed) | Err(ClientError::Rejected { code: 403, .. })), "{outcome:?}");
}
