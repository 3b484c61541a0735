//! The reference matcher against hand-worked cases of spec §9.1.

use axon_relay::protocol::{matches, Event, Filter, Limits, Tag, TagFilter};

fn event(kind: u16, created_at: u64, tags: Vec<Tag>) -> Event {
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    Event::sign(&key, created_at, kind, vec![], tags).expect("sign")
}

#[test]
fn empty_filter_matches_everything() {
    assert!(matches(&Filter::default(), &event(1, 5, vec![])));
}

#[test]
fn each_field() {
    let e = event(1000, 100, vec![Tag::new("t", ["rust", "go"]), Tag::new("p", ["x"])]);
    let with = |f: Filter| matches(&f, &e);
    assert!(with(Filter { ids: Some(vec![e.id[..1].to_vec()]), ..Filter::default() }));
    assert!(!with(Filter { ids: Some(vec![vec![e.id[0] ^ 1]]), ..Filter::default() }));
    assert!(!with(Filter { ids: Some(vec![]), ..Filter::default() }), "an empty list matches nothing");
    assert!(with(Filter { authors: Some(vec![e.pubkey.to_vec()]), ..Filter::default() }));
    assert!(!with(Filter { authors: Some(vec![vec![e.pubkey[0] ^ 1]]), ..Filter::default() }));
    assert!(with(Filter { kinds: Some(vec![1, 1000]), ..Filter::default() }));
    assert!(!with(Filter { kinds: Some(vec![1001]), ..Filter::default() }));
    assert!(with(Filter { since: Some(100), until: Some(100), ..Filter::default() }));
    assert!(!with(Filter { since: Some(101), ..Filter::default() }));
    assert!(!with(Filter { until: Some(99), ..Filter::default() }));
    assert!(with(Filter { since: Some(-5), ..Filter::default() }));
    let tag = |name: &str, values: &[&str]| TagFilter {
        name: name.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    assert!(with(Filter { tags: Some(vec![tag("t", &["rust"])]), ..Filter::default() }));
    assert!(!with(Filter { tags: Some(vec![tag("t", &["go"])]), ..Filter::default() }), "only the first value counts");
    assert!(with(Filter { tags: Some(vec![tag("t", &["rust"]), tag("p", &["x"])]), ..Filter::default() }));
    assert!(
        !with(Filter { tags: Some(vec![tag("t", &["rust"]), tag("p", &["y"])]), ..Filter::default() }),
        "tag entries AND"
    );
    assert!(with(Filter { limit: Some(0), ..Filter::default() }), "limit is not a condition");
}

#[test]
fn bounds() {
    let limits = Limits::default();
    assert!(Filter { ids: Some(vec![vec![0; 33]]), ..Filter::default() }.check_bounds(&limits).is_err());
    assert!(Filter { ids: Some(vec![vec![]]), ..Filter::default() }.check_bounds(&limits).is_err());
    assert!(Filter { kinds: Some(vec![1; 257]), ..Filter::default() }.check_bounds(&limits).is_err());
    assert!(Filter { kinds: Some(vec![1; 256]), ..Filter::default() }.check_bounds(&limits).is_ok());
    assert!(Filter { tags: Some(vec![TagFilter { name: "t".into(), values: vec![] }]), ..Filter::default() }
        .check_bounds(&limits)
        .is_err());
    assert_eq!(Filter { limit: Some(10_000), ..Filter::default() }.effective_limit(500), 500);
    assert_eq!(Filter::default().effective_limit(500), 500);
    assert_eq!(Filter { limit: Some(0), ..Filter::default() }.effective_limit(500), 0);
}
