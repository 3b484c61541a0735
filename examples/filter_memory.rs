//! Heap bytes the live fan-out keeps per filter item and per connection (issue 9).
//!
//! Counts every allocation (a counting global allocator), then registers one connection's
//! subscriptions in a fresh fan-out index and reports the live heap bytes that stay behind:
//! the filters as the index keeps them, its slots, and its bookkeeping. The filters are
//! built after the baseline, so bytes the index keeps of them are counted, and copies it
//! drops are not.
//!
//!     cargo run --example filter_memory
//!     cargo run --example filter_memory -- 32 15 240   # subscriptions, filters each, items each

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use axon_relay::protocol::{Filter, TagFilter};
use axon_relay::relay::fanout::Fanout;
use axon_relay::relay::metrics::Metrics;
use axon_relay::relay::outbound::Outbound;
use axon_relay::relay::store::Viewer;

/// Live heap bytes of the whole process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A deterministic 32-byte value for item `index` of filter `filter`.
fn bytes32(filter: usize, index: usize) -> Vec<u8> {
    let mut state = (filter as u64) << 32 | index as u64 | 1;
    (0..32)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// One filter of `items` elements of the given shape.
fn filter(shape: &str, filter: usize, items: usize) -> Filter {
    match shape {
        "authors" => {
            Filter { authors: Some((0..items).map(|index| bytes32(filter, index)).collect()), ..Filter::default() }
        }
        "ids" => Filter { ids: Some((0..items).map(|index| bytes32(filter, index)).collect()), ..Filter::default() },
        "kinds" => Filter {
            kinds: Some((0..items).map(|index| (filter * items + index) as u16).collect()),
            ..Filter::default()
        },
        _ => Filter {
            tags: Some(vec![TagFilter {
                name: "t".into(),
                values: (0..items).map(|index| hex::encode(bytes32(filter, index))).collect(),
            }]),
            ..Filter::default()
        },
    }
}

/// Heap bytes one connection's subscriptions leave in a fresh fan-out index.
fn measure(shape: &str, subscriptions: usize, filters: usize, items: usize) -> isize {
    let fanout = Fanout::new(Arc::new(Metrics::new()));
    let outbound = Arc::new(Outbound::new(4096));
    let viewer = Viewer { pubkey: [1; 32], is_admin: false };
    let before = LIVE.load(Ordering::Relaxed);
    for subscription in 0..subscriptions {
        let list: Vec<Filter> =
            (0..filters).map(|index| filter(shape, subscription * filters + index, items)).collect();
        fanout.subscribe(1, &format!("sub-{subscription}"), list, viewer, outbound.clone(), None, 4096);
    }
    let after = LIVE.load(Ordering::Relaxed);
    drop(fanout);
    after - before
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|arg| arg.parse().ok()).collect();
    let (subscriptions, filters, items) = match args[..] {
        [subscriptions, filters, items] => (subscriptions, filters, items),
        _ => (32, 15, 240),
    };
    let total = subscriptions * filters * items;
    println!(
        "one connection: {subscriptions} subscriptions x {filters} filters x {items} items = {total} filter items"
    );
    println!("{:<8} {:>14} {:>16}", "items", "bytes/item", "KiB/connection");
    for shape in ["authors", "ids", "tags", "kinds"] {
        let bytes = measure(shape, subscriptions, filters, items);
        println!("{shape:<8} {:>14.1} {:>16.1}", bytes as f64 / total as f64, bytes as f64 / 1024.0);
    }
}
