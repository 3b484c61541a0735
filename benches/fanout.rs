//! The live fan-out: the plain reference matcher over every live filter versus the
//! fan-out index, with 10,000 live subscriptions.
//!
//! Each subscription filters on one kind and one `t` tag value; the published event shares
//! its kind with 1% of them and matches none, so the index must still find and reject
//! candidates, and no queue fills up while the bench runs.

use std::sync::Arc;

use axon_relay::protocol::filter::any_matches;
use axon_relay::protocol::{Event, Filter, Tag, TagFilter};
use axon_relay::relay::fanout::Fanout;
use axon_relay::relay::metrics::Metrics;
use axon_relay::relay::outbound::Outbound;
use axon_relay::relay::store::{Accepted, Committed, Viewer};
use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::SigningKey;

const SUBSCRIPTIONS: usize = 10_000;

fn filter(index: usize) -> Filter {
    Filter {
        kinds: Some(vec![1000 + (index % 100) as u16]),
        tags: Some(vec![TagFilter { name: "t".into(), values: vec![format!("topic-{index}")] }]),
        ..Filter::default()
    }
}

fn bench_fanout(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[9; 32]);
    let event =
        Event::sign(&key, 1_700_000_000, 1000, vec![0; 200], vec![Tag::new("t", ["no-such-topic"])]).expect("sign");
    let filters: Vec<Vec<Filter>> = (0..SUBSCRIPTIONS).map(|index| vec![filter(index)]).collect();
    let viewer = Viewer { pubkey: [1; 32], is_admin: false };

    let fanout = Fanout::new(Arc::new(Metrics::new()));
    let outbound = Arc::new(Outbound::new(4096));
    for (index, filters) in filters.iter().enumerate() {
        fanout.subscribe(index as u64, "s", filters.clone(), viewer, outbound.clone(), None, 4096);
        let _ = fanout.go_live(index as u64, "s");
    }
    let committed = [Committed {
        seq: 1,
        accepted: Arc::new(Accepted { raw: event.encode().into(), event: event.clone(), expires_at: None }),
    }];

    let mut group = c.benchmark_group("fanout_10k_filters");
    group.bench_function("reference_matcher_scan", |b| {
        b.iter(|| filters.iter().filter(|filters| any_matches(filters, &event)).count())
    });
    group.bench_function("fanout_index_dispatch", |b| b.iter(|| fanout.dispatch_committed(&committed)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench_fanout
}
criterion_main!(benches);
