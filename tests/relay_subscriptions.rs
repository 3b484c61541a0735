//! Spec §9: stored phase, EOSE, live phase, replay, exactly-once, replacement,
//! visibility, expiry and overflow — over real sockets and a real SQLite file.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use axon_relay::client::SubItem;
use axon_relay::protocol::frame::{encode_publish_frame, Subscribe};
use axon_relay::protocol::{Filter, Frame, Tag, TagFilter};
use common::*;

fn kinds(list: &[u16]) -> Filter {
    Filter { kinds: Some(list.to_vec()), ..Filter::default() }
}

#[tokio::test]
async fn stored_phase_is_newest_first_with_per_filter_limits_and_no_duplicates() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let mut published = Vec::new();
    for (index, created_at) in [100u64, 300, 200, 300, 50].into_iter().enumerate() {
        let event = event_at(&alice(), 1000 + (index as u16 % 2), created_at, &format!("e{index}"), vec![]);
        let seq = client.publish(&event).await.expect("publish").expect("seq");
        published.push((event, seq));
    }
    // Newest by created_at, ties by higher seq.
    let mut subscription = client.subscribe("all", vec![Filter::default()], None).await.expect("sub");
    let order: Vec<u64> = subscription.stored().await.expect("stored").into_iter().map(|(_, seq)| seq).collect();
    let seq_of = |index: usize| published[index].1;
    assert_eq!(order, vec![seq_of(3), seq_of(1), seq_of(2), seq_of(0), seq_of(4)]);

    // Each filter its own limit; the union has no duplicates.
    let filters = vec![Filter { limit: Some(2), ..kinds(&[1000]) }, Filter { limit: Some(1), ..Filter::default() }];
    let mut subscription = client.subscribe("two", filters, None).await.expect("sub");
    let seqs: Vec<u64> = subscription.stored().await.expect("stored").into_iter().map(|(_, seq)| seq).collect();
    // kind 1000: indexes 0, 2, 4 → newest two are 2 (200) and 0 (100); newest overall is 3.
    assert_eq!(seqs, vec![seq_of(3), seq_of(2), seq_of(0)]);

    // limit 0: live only.
    let mut subscription =
        client.subscribe("live", vec![Filter { limit: Some(0), ..Filter::default() }], None).await.expect("sub");
    assert!(subscription.stored().await.expect("stored").is_empty());
}

#[tokio::test]
async fn tag_filters_with_several_values_return_the_newest_limit_across_values() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    // Topics a and b interleaved in time; one event carries both.
    let shapes: [(u64, Vec<Tag>); 6] = [
        (10, vec![Tag::new("t", ["a"])]),
        (20, vec![Tag::new("t", ["b"])]),
        (30, vec![Tag::new("t", ["a"]), Tag::new("t", ["b"])]),
        (40, vec![Tag::new("t", ["b"])]),
        (50, vec![Tag::new("t", ["a", "x"]), Tag::new("p", ["a"])]),
        (60, vec![Tag::new("t", ["c"])]),
    ];
    let mut seqs = Vec::new();
    for (index, (created_at, tags)) in shapes.into_iter().enumerate() {
        let event = event_at(&alice(), 1000, created_at, &format!("tagged{index}"), tags);
        seqs.push(client.publish(&event).await.expect("publish").expect("seq"));
    }
    let tag_filter = |values: &[&str], limit: u64| Filter {
        tags: Some(vec![TagFilter {
            name: "t".into(),
            values: values.iter().map(|value| value.to_string()).collect(),
        }]),
        limit: Some(limit),
        ..Filter::default()
    };
    let stored = |filter: Filter| {
        let client = &client;
        async move {
            let mut subscription = client.subscribe("tags", vec![filter], None).await.expect("sub");
            subscription.stored().await.expect("stored").into_iter().map(|(_, seq)| seq).collect::<Vec<u64>>()
        }
    };
    // Newest three across a and b: 50 (a), 40 (b), 30 (a and b, once).
    assert_eq!(stored(tag_filter(&["a", "b"], 3)).await, vec![seqs[4], seqs[3], seqs[2]]);
    assert_eq!(stored(tag_filter(&["b", "a"], 10)).await, vec![seqs[4], seqs[3], seqs[2], seqs[1], seqs[0]]);
    assert_eq!(stored(tag_filter(&["a"], 2)).await, vec![seqs[4], seqs[2]]);
    assert_eq!(stored(tag_filter(&["c", "zzz"], 5)).await, vec![seqs[5]]);
}

#[tokio::test]
async fn default_limit_is_max_limit_and_larger_limits_are_capped() {
    let relay = TestRelay::start_with(|config| config.limits.max_limit = 3).await;
    let client = relay.connect(&alice()).await;
    for index in 0..5 {
        client.publish(&event(&alice(), 1000, &format!("{index}"), vec![])).await.expect("publish");
    }
    let mut subscription = client.subscribe("a", vec![Filter::default()], None).await.expect("sub");
    assert_eq!(subscription.stored().await.expect("stored").len(), 3);
    let mut subscription =
        client.subscribe("b", vec![Filter { limit: Some(100), ..Filter::default() }], None).await.expect("sub");
    assert_eq!(subscription.stored().await.expect("stored").len(), 3);
}

#[tokio::test]
async fn each_filter_field_selects_in_the_stored_phase() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let a = event_at(&alice(), 1000, 100, "a", vec![tag("t", "rust"), tag("p", "x")]);
    let b = event_at(&bob(), 1001, 200, "b", vec![tag("t", "go")]);
    let c = event_at(&alice(), 1002, 300, "c", vec![]);
    for event in [&a, &b, &c] {
        client.publish(event).await.expect("publish");
    }
    let cases: Vec<(Filter, Vec<&axon_relay::protocol::Event>)> = vec![
        (Filter { ids: Some(vec![a.id[..3].to_vec(), c.id.to_vec()]), ..Filter::default() }, vec![&c, &a]),
        (Filter { authors: Some(vec![bob().verifying_key().to_bytes()[..2].to_vec()]), ..Filter::default() }, vec![&b]),
        (kinds(&[1000, 1002]), vec![&c, &a]),
        (Filter { since: Some(200), ..Filter::default() }, vec![&c, &b]),
        (Filter { until: Some(200), ..Filter::default() }, vec![&b, &a]),
        (
            Filter {
                tags: Some(vec![TagFilter { name: "t".into(), values: vec!["rust".into(), "go".into()] }]),
                ..Filter::default()
            },
            vec![&b, &a],
        ),
        (
            Filter {
                tags: Some(vec![
                    TagFilter { name: "t".into(), values: vec!["rust".into()] },
                    TagFilter { name: "p".into(), values: vec!["x".into()] },
                ]),
                ..Filter::default()
            },
            vec![&a],
        ),
        (Filter { ids: Some(vec![]), ..Filter::default() }, vec![]),
    ];
    for (index, (filter, expected)) in cases.into_iter().enumerate() {
        let mut subscription = client.subscribe(&format!("f{index}"), vec![filter.clone()], None).await.expect("sub");
        let got: Vec<_> = subscription.stored().await.expect("stored").into_iter().map(|(event, _)| event.id).collect();
        let want: Vec<_> = expected.iter().map(|event| event.id).collect();
        assert_eq!(got, want, "filter {filter:?}");
    }
}

#[tokio::test]
async fn replay_with_after_seq_is_oldest_first_and_ignores_limits() {
    let relay = TestRelay::start_with(|config| config.limits.max_limit = 2).await;
    let client = relay.connect(&alice()).await;
    let mut seqs = Vec::new();
    for index in 0..6u64 {
        let event = event_at(&alice(), 1000, 1000 - index, &format!("{index}"), vec![]);
        seqs.push(client.publish(&event).await.expect("publish").expect("seq"));
    }
    let after = seqs[1];
    let mut subscription =
        client.subscribe("r", vec![Filter { limit: Some(1), ..Filter::default() }], Some(after)).await.expect("sub");
    let got: Vec<u64> = subscription.stored().await.expect("stored").into_iter().map(|(_, seq)| seq).collect();
    assert_eq!(got, seqs[2..].to_vec());
    // Then live.
    let live = event(&alice(), 1000, "live", vec![]);
    let live_seq = client.publish(&live).await.expect("publish").expect("seq");
    assert_eq!(next_event(&mut subscription).await.1, live_seq);
}

#[tokio::test]
async fn exactly_once_across_eose_under_concurrent_publishing() {
    let relay = TestRelay::start().await;
    let publisher = relay.connect(&alice()).await;
    let subscriber = relay.connect(&bob()).await;
    let total = 400usize;
    let events: Vec<_> = (0..total).map(|index| event(&alice(), 1000, &format!("{index}"), vec![])).collect();
    let expected: BTreeSet<_> = events.iter().map(|event| event.id).collect();
    let publishing = tokio::spawn(async move {
        for event in &events {
            publisher.publish(event).await.expect("publish");
        }
    });
    // Subscribe repeatedly while publishing is under way; each must see every event once.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut subscription =
        subscriber.subscribe("x", vec![Filter { limit: Some(500), ..kinds(&[1000]) }], None).await.expect("sub");
    let mut seen = Vec::new();
    let mut eose = false;
    while seen.len() < total {
        match next_item(&mut subscription).await {
            SubItem::Event { event, .. } => seen.push(event.id),
            SubItem::Eose => {
                assert!(!eose, "one EOSE");
                eose = true;
            }
            SubItem::Ended(error) => panic!("ended: {error:?}"),
        }
    }
    publishing.await.expect("publisher");
    assert!(eose);
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), expected, "none lost");
    assert_quiet(&mut subscription).await;
}

/// Fan-out runs on its own stage, off the writer: under pipelined publishing from several
/// connections, subscriptions registered at different moments (replaying from seq 0) each
/// see every event exactly once, the stored phase and the live phase together in strictly
/// increasing seq order across EOSE.
#[tokio::test]
async fn exactly_once_in_seq_order_across_eose_with_pipelined_publishers() {
    let relay = TestRelay::start().await;
    let (publishers, per_publisher) = (4usize, 150usize);
    let mut expected = BTreeSet::new();
    let mut tasks = Vec::new();
    for worker in 0..publishers {
        let client = relay.connect(&alice()).await;
        let events: Vec<_> =
            (0..per_publisher).map(|index| event(&alice(), 1000, &format!("{worker}-{index}"), vec![])).collect();
        expected.extend(events.iter().map(|event| event.id));
        tasks.push(tokio::spawn(async move {
            let publishing = events.iter().map(|event| client.publish(event));
            for answer in futures_util::future::join_all(publishing).await {
                answer.expect("publish").expect("seq");
            }
        }));
    }
    let mut subscriptions = Vec::new();
    for index in 0..3 {
        let subscriber = relay.connect(&bob()).await;
        let filter = vec![kinds(&[1000])];
        let subscription = subscriber.subscribe(&format!("s{index}"), filter, Some(0)).await.expect("sub");
        subscriptions.push((subscriber, subscription));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let total = publishers * per_publisher;
    for (index, (_subscriber, subscription)) in subscriptions.iter_mut().enumerate() {
        let mut seen = HashSet::new();
        let (mut last_seq, mut eose) = (0, false);
        while seen.len() < total {
            match next_item(subscription).await {
                SubItem::Event { event, seq, .. } => {
                    assert!(seq > last_seq, "subscription {index}: seq {seq} after {last_seq} (eose: {eose})");
                    last_seq = seq;
                    assert!(seen.insert(event.id), "subscription {index}: an event twice");
                }
                SubItem::Eose => {
                    assert!(!eose, "one EOSE");
                    eose = true;
                }
                SubItem::Ended(error) => panic!("ended: {error:?}"),
            }
        }
        assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected, "subscription {index}: none lost");
        if !eose {
            assert_eq!(next_item(subscription).await, SubItem::Eose, "EOSE after the stored phase");
        }
        assert_quiet(subscription).await;
    }
    for task in tasks {
        task.await.expect("publisher");
    }
}

#[tokio::test]
async fn live_events_arrive_in_seq_order() {
    let relay = TestRelay::start().await;
    let subscriber = relay.connect(&bob()).await;
    let mut subscription =
        subscriber.subscribe("x", vec![Filter { limit: Some(0), ..Filter::default() }], None).await.expect("sub");
    assert_eq!(next_item(&mut subscription).await, SubItem::Eose);
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let client = relay.connect(&alice()).await;
        tasks.push(tokio::spawn(async move {
            for index in 0..50 {
                client.publish(&event(&alice(), 1000, &format!("{worker}-{index}"), vec![])).await.expect("publish");
            }
        }));
    }
    let mut last = 0;
    for _ in 0..200 {
        let (_, seq) = next_event(&mut subscription).await;
        assert!(seq > last, "seq order: {seq} after {last}");
        last = seq;
    }
    for task in tasks {
        task.await.expect("publisher");
    }
}

/// Reads frames until the OK for `id`, returning the EVENTs seen on the way as (sub_id, event id).
async fn events_until_ok(socket: &mut Raw, id: [u8; 32]) -> Vec<(String, [u8; 32])> {
    let mut events = Vec::new();
    loop {
        match raw_frame(socket).await {
            RawItem::Frame(Frame::Ok(ok)) if ok.id == id => return events,
            RawItem::Frame(Frame::Event(message)) => {
                events.push((message.sub_id, message.event.decode().expect("event").id))
            }
            RawItem::Frame(Frame::Ok(_)) | RawItem::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn reusing_a_sub_id_replaces_and_unsubscribe_stops() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    for filter in [kinds(&[1000]), kinds(&[1001])] {
        send_raw(
            &mut socket,
            Frame::Subscribe(Subscribe { sub_id: "s".into(), filters: vec![filter], after_seq: None }).encode(),
        )
        .await;
        assert!(matches!(raw_frame(&mut socket).await, RawItem::Frame(Frame::Eose { .. })));
    }
    let old_kind = event(&alice(), 1000, "old filter", vec![]);
    send_raw(&mut socket, encode_publish_frame(&old_kind.encode())).await;
    assert_eq!(events_until_ok(&mut socket, old_kind.id).await, vec![], "the replaced filter no longer applies");
    let new_kind = event(&alice(), 1001, "new filter", vec![]);
    send_raw(&mut socket, encode_publish_frame(&new_kind.encode())).await;
    assert_eq!(events_until_ok(&mut socket, new_kind.id).await, vec![("s".to_string(), new_kind.id)]);

    send_raw(&mut socket, Frame::Unsubscribe { sub_id: "s".into() }.encode()).await;
    send_raw(&mut socket, Frame::Unsubscribe { sub_id: "never-existed".into() }.encode()).await;
    let after = event(&alice(), 1001, "after unsubscribe", vec![]);
    send_raw(&mut socket, encode_publish_frame(&after.encode())).await;
    assert_eq!(events_until_ok(&mut socket, after.id).await, vec![], "nothing after UNSUBSCRIBE");
}

#[tokio::test]
async fn direct_messages_are_visible_only_to_author_and_recipient() {
    let relay = TestRelay::start().await;
    let alice_client = relay.connect(&alice()).await;
    let bob_client = relay.connect(&bob()).await;
    let admin_client = relay.connect(&admin()).await;
    let live_filter = vec![Filter { limit: Some(0), ..kinds(&[2000]) }];
    let mut bob_live = bob_client.subscribe("live", live_filter.clone(), None).await.expect("sub");
    let mut admin_live = admin_client.subscribe("live", live_filter, None).await.expect("sub");
    bob_live.stored().await.expect("eose");
    admin_live.stored().await.expect("eose");
    let dm = event(&alice(), 2000, "sealed", vec![tag("p", &hex_of(&bob()))]);
    alice_client.publish(&dm).await.expect("publish");
    assert_eq!(next_event(&mut bob_live).await.0, dm, "recipient sees it live");
    assert_quiet(&mut admin_live).await;
    for (client, visible) in [(&alice_client, true), (&bob_client, true), (&admin_client, false)] {
        let mut stored = client.subscribe("stored", vec![kinds(&[2000])], None).await.expect("sub");
        let got = stored.stored().await.expect("stored");
        assert_eq!(!got.is_empty(), visible);
    }
}

#[tokio::test]
async fn admin_events_are_visible_only_to_admins() {
    let relay = TestRelay::start().await;
    let admin_client = relay.connect(&admin()).await;
    let alice_client = relay.connect(&alice()).await;
    let mut alice_live =
        alice_client.subscribe("live", vec![Filter { limit: Some(0), ..Filter::default() }], None).await.expect("sub");
    alice_live.stored().await.expect("eose");
    let mut admin_live =
        admin_client.subscribe("live", vec![Filter { limit: Some(0), ..Filter::default() }], None).await.expect("sub");
    admin_live.stored().await.expect("eose");
    let note = event(&admin(), 9050, "audit note", vec![]);
    admin_client.publish(&note).await.expect("publish");
    assert_eq!(next_event(&mut admin_live).await.0, note);
    assert_quiet(&mut alice_live).await;
    let mut stored = alice_client.subscribe("stored", vec![kinds(&[9050])], None).await.expect("sub");
    assert!(stored.stored().await.expect("stored").is_empty());
    let mut stored = admin_client.subscribe("stored", vec![kinds(&[9050])], None).await.expect("sub");
    assert_eq!(stored.stored().await.expect("stored").len(), 1);
}

#[tokio::test]
async fn expired_events_are_not_returned_and_are_deleted() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let expiring = event(&alice(), 5000, "job", vec![tag("expires_at", &(now() + 1).to_string())]);
    let lasting = event(&alice(), 5000, "job 2", vec![tag("expires_at", &(now() + 3600).to_string())]);
    client.publish(&expiring).await.expect("publish");
    client.publish(&lasting).await.expect("publish");
    let mut before = client.subscribe("a", vec![kinds(&[5000])], None).await.expect("sub");
    assert_eq!(before.stored().await.expect("stored").len(), 2);
    // Wait until the clock has passed expires_at (whole seconds).
    let deadline = now() + 2;
    while now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = client.subscribe("b", vec![kinds(&[5000])], None).await.expect("sub");
    let ids: Vec<_> = after.stored().await.expect("stored").into_iter().map(|(event, _)| event.id).collect();
    assert_eq!(ids, vec![lasting.id]);
    let store = &relay.handle.as_ref().expect("running").state.store;
    assert_eq!(store.delete_expired(now()).await.expect("prune"), 1);
    let database = rusqlite::Connection::open(&relay.config.db).expect("open");
    let count: i64 = database.query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0)).expect("count");
    assert_eq!(count, 1);
    // The deleted event's tag rows go with it; the other's stay.
    let tag_rows: i64 = database
        .query_row("SELECT COUNT(*) FROM tags WHERE seq NOT IN (SELECT seq FROM events)", [], |row| row.get(0))
        .expect("orphans");
    assert_eq!(tag_rows, 0, "no tag row outlives its event");
    let kept: i64 = database.query_row("SELECT COUNT(*) FROM tags", [], |row| row.get(0)).expect("tags");
    assert_eq!(kept, 1, "the lasting event's expires_at tag");
}

#[tokio::test]
async fn subscription_bounds_are_enforced_with_400() {
    let relay = TestRelay::start_with(|config| {
        config.limits.max_subscriptions = 2;
        config.limits.max_filters = 2;
        config.limits.max_filter_items = 3;
    })
    .await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let subscribe = |sub_id: &str, filters: Vec<Filter>| {
        Frame::Subscribe(Subscribe { sub_id: sub_id.into(), filters, after_seq: None }).encode()
    };
    send_raw(&mut socket, subscribe("too-many-filters", vec![Filter::default(); 3])).await;
    assert_eq!(expect_error(&mut socket, 400).await.sub_id.as_deref(), Some("too-many-filters"));
    send_raw(&mut socket, subscribe("too-many-items", vec![kinds(&[1, 2, 3, 4])])).await;
    expect_error(&mut socket, 400).await;
    send_raw(&mut socket, subscribe("no-filters", vec![])).await;
    expect_error(&mut socket, 400).await;
    for sub_id in ["one", "two"] {
        send_raw(&mut socket, subscribe(sub_id, vec![Filter::default()])).await;
        match raw_frame(&mut socket).await {
            RawItem::Frame(Frame::Eose { sub_id: got }) => assert_eq!(got, sub_id),
            other => panic!("{other:?}"),
        }
    }
    send_raw(&mut socket, subscribe("three", vec![Filter::default()])).await;
    expect_error(&mut socket, 400).await;
    // Replacing an existing one is fine.
    send_raw(&mut socket, subscribe("two", vec![Filter::default()])).await;
    assert!(matches!(raw_frame(&mut socket).await, RawItem::Frame(Frame::Eose { .. })));
}

/// A subscriber that stops reading overflows; the ERROR carries the resume point, and
/// resubscribing from it delivers everything the first subscription missed.
#[tokio::test]
async fn overflow_ends_the_subscription_with_a_resume_point() {
    let relay = TestRelay::start_with(|config| config.limits.outbound_queue = 8).await;
    let mut slow = raw_authed(&relay, &bob()).await;
    let subscribe = Frame::Subscribe(Subscribe {
        sub_id: "slow".into(),
        filters: vec![Filter { limit: Some(0), ..kinds(&[1000]) }],
        after_seq: None,
    });
    send_raw(&mut slow, subscribe.encode()).await;
    assert!(matches!(raw_frame(&mut slow).await, RawItem::Frame(Frame::Eose { .. })));
    // Publish enough large events to fill the socket buffers and the 8-frame queue while
    // `slow` reads nothing.
    let publisher = relay.connect(&alice()).await;
    let big = "x".repeat(60_000);
    let mut published = Vec::new();
    for index in 0..400 {
        let event = event(&alice(), 1000, &format!("{index}{big}"), vec![]);
        let seq = publisher.publish(&event).await.expect("publish").expect("seq");
        published.push((event.id, seq));
    }
    // Now read: events, then the overflow error.
    let mut received = Vec::new();
    let resume = loop {
        match raw_frame(&mut slow).await {
            RawItem::Frame(Frame::Event(message)) => received.push(message.seq),
            RawItem::Frame(Frame::Error(error)) => {
                assert_eq!(error.code, 503);
                assert!(error.message.starts_with("overflow:"), "{}", error.message);
                assert_eq!(error.sub_id.as_deref(), Some("slow"));
                break error.seq.expect("resume seq");
            }
            RawItem::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(received.len() < published.len(), "the subscriber must have overflowed");
    // Every matching event with seq ≤ resume was delivered (start was before the first).
    let delivered: BTreeSet<u64> = received.iter().copied().collect();
    for (_, seq) in published.iter().filter(|(_, seq)| *seq <= resume) {
        assert!(delivered.contains(seq), "seq {seq} ≤ resume {resume} was not delivered");
    }
    // Resume: the rest arrives, oldest first.
    let resumed =
        Frame::Subscribe(Subscribe { sub_id: "again".into(), filters: vec![kinds(&[1000])], after_seq: Some(resume) });
    send_raw(&mut slow, resumed.encode()).await;
    let mut replayed = Vec::new();
    loop {
        match raw_frame(&mut slow).await {
            RawItem::Frame(Frame::Event(message)) if message.sub_id == "again" => replayed.push(message.seq),
            RawItem::Frame(Frame::Event(_)) => {}
            RawItem::Frame(Frame::Eose { .. }) => break,
            RawItem::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<u64> = published.iter().map(|(_, seq)| *seq).filter(|seq| *seq > resume).collect();
    assert_eq!(replayed, expected);
    // The connection and other subscriptions still work.
    send_raw(&mut slow, encode_publish_frame(&event(&bob(), 1001, "still here", vec![]).encode())).await;
    loop {
        match raw_frame(&mut slow).await {
            RawItem::Frame(Frame::Ok(_)) => break,
            RawItem::Frame(Frame::Event(_)) | RawItem::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The fan-out stage queues a whole commit's events at once, faster than the socket writer
/// drains them: a subscriber that reads gets every event of a pipelined burst far larger
/// than its connection's queue, in seq order, instead of an overflow (only a subscriber
/// whose socket stops taking bytes overflows, as above).
#[tokio::test]
async fn a_reading_subscriber_gets_a_burst_larger_than_its_queue() {
    const EVENTS: usize = 400;
    let relay = TestRelay::start_with(|config| config.limits.outbound_queue = 4).await;
    let mut reader = raw_authed(&relay, &bob()).await;
    let subscribe = Frame::Subscribe(Subscribe {
        sub_id: "burst".into(),
        filters: vec![Filter { limit: Some(0), ..kinds(&[1000]) }],
        after_seq: None,
    });
    send_raw(&mut reader, subscribe.encode()).await;
    assert!(matches!(raw_frame(&mut reader).await, RawItem::Frame(Frame::Eose { .. })));
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < EVENTS {
            match raw_frame(&mut reader).await {
                RawItem::Frame(Frame::Event(message)) => seqs.push(message.seq),
                RawItem::Ping => {}
                other => panic!("after {} events: {other:?}", seqs.len()),
            }
        }
        seqs
    });
    let publisher = relay.connect(&alice()).await;
    let events: Vec<_> = (0..EVENTS).map(|index| event(&alice(), 1000, &format!("burst {index}"), vec![])).collect();
    let mut published = Vec::new();
    for answer in futures_util::future::join_all(events.iter().map(|event| publisher.publish(event))).await {
        published.push(answer.expect("publish").expect("seq"));
    }
    published.sort_unstable();
    assert_eq!(reading.await.expect("reader"), published);
}
