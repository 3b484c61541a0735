//! Property test: for random events and random filters, the reference matcher, the SQLite
//! query path and the live fan-out index select exactly the same events — visibility
//! included (spec §9.3): the events include direct messages and admin kinds, and the
//! subscriber is a random one of an admin and two plain keys.

mod common;

use std::collections::BTreeSet;

use axon_relay::client::SubItem;
use axon_relay::protocol::{matches, visible, Event, Filter, Tag, TagFilter, Viewer};
use common::*;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Plain kinds, a direct-message kind (2000) and an admin kind without effect (9003).
const KINDS: [u16; 6] = [1, 1000, 1001, 2000, 7000, 9003];
/// Index of the admin in [`authors`].
const ADMIN: usize = 2;
/// Not in KINDS: only the marker has it.
const MARKER_KIND: u16 = 4321;
const TAG_NAMES: [&str; 3] = ["t", "e", "x"];
const TAG_VALUES: [&str; 4] = ["a", "b", "c", ""];

fn authors() -> Vec<SigningKey> {
    vec![alice(), bob(), admin()]
}

/// An event from a small vocabulary, so filters match often.
#[derive(Debug, Clone)]
struct EventSpec {
    author: usize,
    kind: u16,
    created_at: u64,
    tags: Vec<(usize, Vec<usize>)>,
    /// A `p` tag naming this author, if any (DM recipients).
    p: Option<usize>,
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (
        0..3usize,
        prop::sample::select(KINDS.to_vec()),
        1_000u64..1_010,
        prop::collection::vec((0..3usize, prop::collection::vec(0..4usize, 0..3)), 0..3),
        prop::option::of(0..3usize),
    )
        .prop_map(|(author, kind, created_at, tags, p)| EventSpec { author, kind, created_at, tags, p })
}

fn build(spec: &EventSpec, index: usize) -> Option<Event> {
    // Only admins author admin kinds (anything else is refused with 403).
    if spec.kind == 9003 && spec.author != ADMIN {
        return None;
    }
    let mut tags: Vec<Tag> = spec
        .tags
        .iter()
        .map(|(name, values)| Tag::new(TAG_NAMES[*name], values.iter().map(|value| TAG_VALUES[*value])))
        .collect();
    if let Some(recipient) = spec.p {
        tags.push(Tag::new("p", [hex_of(&authors()[recipient])]));
    }
    // Duplicate tags make an invalid event: skip those specs.
    Event::sign(&authors()[spec.author], spec.created_at, spec.kind, format!("{index}").into_bytes(), tags).ok()
}

fn filter_strategy() -> impl Strategy<Value = Filter> {
    let prefix = prop::collection::vec(any::<u8>(), 1..3);
    (
        prop::option::weighted(0.2, prop::collection::vec(prefix, 0..3)),
        prop::option::weighted(0.3, prop::collection::vec(0..3usize, 0..3)),
        prop::option::weighted(0.4, prop::collection::vec(prop::sample::select(KINDS.to_vec()), 0..3)),
        prop::option::weighted(0.3, 998i64..1_012),
        prop::option::weighted(0.3, 998i64..1_012),
        prop::option::weighted(0.4, prop::collection::vec((0..3usize, prop::collection::vec(0..4usize, 1..3)), 1..3)),
        prop::option::weighted(0.5, 1u64..6),
    )
        .prop_map(|(ids, authors_index, kinds, since, until, tags, limit)| {
            let keys = authors();
            Filter {
                ids,
                authors: authors_index.map(|list| {
                    list.into_iter().map(|index| keys[index].verifying_key().to_bytes()[..2].to_vec()).collect()
                }),
                kinds,
                since,
                until,
                tags: tags.map(|list| {
                    list.into_iter()
                        .map(|(name, values)| TagFilter {
                            name: TAG_NAMES[name].into(),
                            values: values.into_iter().map(|value| TAG_VALUES[value].into()).collect(),
                        })
                        .collect()
                }),
                limit,
            }
        })
}

async fn check(specs: Vec<EventSpec>, filters: Vec<Filter>, reader: usize) -> Result<(), TestCaseError> {
    let relay = TestRelay::start_with(|config| config.limits.max_limit = 10_000).await;
    let reader_key = &authors()[reader];
    let client = relay.connect(reader_key).await;
    let viewer = Viewer { pubkey: reader_key.verifying_key().to_bytes(), is_admin: reader == ADMIN };
    let seen = |filter: &Filter, event: &Event| matches(filter, event) && visible(&viewer, event);
    // Live subscriptions first, one per filter, each also matching a final marker event so
    // everything it received can be read up to the marker.
    let marker_filter = Filter { kinds: Some(vec![MARKER_KIND]), limit: Some(0), ..Filter::default() };
    let mut live = Vec::new();
    for (index, filter) in filters.iter().enumerate() {
        let both = vec![Filter { limit: Some(0), ..filter.clone() }, marker_filter.clone()];
        let mut subscription = client.subscribe(&format!("live{index}"), both, None).await.expect("sub");
        prop_assert_eq!(next_item(&mut subscription).await, SubItem::Eose);
        live.push(subscription);
    }
    let events: Vec<Event> = specs.iter().enumerate().filter_map(|(index, spec)| build(spec, index)).collect();
    for event in &events {
        client.publish(event).await.expect("publish");
    }
    let marker = event(&admin(), MARKER_KIND, "marker", vec![]);
    client.publish(&marker).await.expect("publish");
    for (index, filter) in filters.iter().enumerate() {
        let reference: BTreeSet<_> = events.iter().filter(|event| seen(filter, event)).map(|event| event.id).collect();
        let mut stored = client.subscribe(&format!("stored{index}"), vec![filter.clone()], None).await.expect("sub");
        let from_sql: BTreeSet<_> =
            stored.stored().await.expect("stored").into_iter().map(|(event, _)| event.id).collect();
        // The stored phase: the filter's newest `limit` (created_at, then publish order).
        let mut newest: Vec<(u64, usize, _)> = events
            .iter()
            .chain(std::iter::once(&marker))
            .enumerate()
            .filter(|(_, event)| seen(filter, event))
            .map(|(order, event)| (event.created_at, order, event.id))
            .collect();
        newest.sort_by_key(|(created_at, order, _)| std::cmp::Reverse((*created_at, *order)));
        newest.truncate(filter.limit.map_or(usize::MAX, |limit| limit as usize));
        let expected_sql: BTreeSet<_> = newest.into_iter().map(|(_, _, id)| id).collect();
        prop_assert_eq!(&from_sql, &expected_sql, "SQL vs reference for {:?}", filter);
        let mut from_fanout = BTreeSet::new();
        loop {
            let (delivered, _) = next_event(&mut live[index]).await;
            if delivered.id == marker.id {
                break;
            }
            prop_assert!(from_fanout.insert(delivered.id), "delivered twice");
        }
        prop_assert_eq!(&from_fanout, &reference, "fan-out vs reference for {:?}", filter);
    }
    Ok(())
}

#[test]
fn reference_sql_and_fanout_agree() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut runner = TestRunner::new(Config { cases: 64, ..Config::default() });
    let strategy =
        (prop::collection::vec(event_spec(), 1..40), prop::collection::vec(filter_strategy(), 1..6), 0..3usize);
    runner
        .run(&strategy, |(specs, filters, reader)| runtime.block_on(check(specs, filters, reader)))
        .expect("the three paths agree");
}
