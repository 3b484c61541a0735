//! Live filters as the fan-out keeps them: the meaning of [`Filter`] (spec §9.1) in far
//! fewer bytes, and the per-connection count of filter items.
//!
//! A [`Filter`] keeps each id or author prefix in its own heap `Vec` and each tag value in
//! its own `String`; a connection at the caps (32 subscriptions × 16 filters × 256 items)
//! held megabytes that way. Here full 32-byte prefixes are one sorted array (binary
//! search), shorter prefixes one concatenated buffer, kinds a sorted array, and each tag
//! condition's values one sorted, concatenated string. [`CompactFilter::matches`] agrees
//! with [`crate::protocol::matches`] on every event (tests/matcher_agreement.rs checks the
//! fan-out against it).

use crate::protocol::{Event, Filter};

/// Id or author prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefixes {
    /// Full 32-byte values, sorted, without duplicates.
    full: Box<[[u8; 32]]>,
    /// Shorter prefixes, concatenated.
    partial: Box<[u8]>,
    /// The length of each shorter prefix in `partial` (1..=31).
    partial_lens: Box<[u8]>,
}

impl Prefixes {
    fn new(prefixes: &[Vec<u8>]) -> Prefixes {
        let mut full: Vec<[u8; 32]> =
            prefixes.iter().filter_map(|prefix| <[u8; 32]>::try_from(&prefix[..]).ok()).collect();
        full.sort_unstable();
        full.dedup();
        let short = prefixes.iter().filter(|prefix| prefix.len() < 32);
        let partial: Vec<u8> = short.clone().flat_map(|prefix| prefix.iter().copied()).collect();
        let partial_lens: Vec<u8> = short.map(|prefix| prefix.len() as u8).collect();
        Prefixes { full: full.into(), partial: partial.into(), partial_lens: partial_lens.into() }
    }

    fn matches(&self, bytes: &[u8; 32]) -> bool {
        if self.full.binary_search(bytes).is_ok() {
            return true;
        }
        let mut start = 0;
        self.partial_lens.iter().any(|len| {
            let prefix = &self.partial[start..start + *len as usize];
            start += *len as usize;
            bytes.starts_with(prefix)
        })
    }
}

/// One tag condition: a tag `name` whose first value is one of the values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TagCondition {
    name: Box<str>,
    /// The values, sorted and without duplicates, concatenated.
    values: Box<str>,
    /// Where each value in `values` ends.
    ends: Box<[u32]>,
}

impl TagCondition {
    fn new(name: &str, values: &[String]) -> TagCondition {
        let mut sorted: Vec<&str> = values.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut joined = String::with_capacity(sorted.iter().map(|value| value.len()).sum());
        let mut ends = Vec::with_capacity(sorted.len());
        for value in sorted {
            joined.push_str(value);
            ends.push(joined.len() as u32);
        }
        TagCondition { name: name.into(), values: joined.into(), ends: ends.into() }
    }

    fn value(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        self.values.get(start..self.ends[index] as usize).unwrap_or_default()
    }

    fn contains(&self, candidate: &str) -> bool {
        let (mut low, mut high) = (0, self.ends.len());
        while low < high {
            let middle = (low + high) / 2;
            match self.value(middle).cmp(candidate) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
            }
        }
        false
    }

    fn holds(&self, event: &Event) -> bool {
        event
            .tags
            .iter()
            .any(|tag| *tag.name == *self.name && tag.first_value().is_some_and(|first| self.contains(first)))
    }
}

/// A filter as the fan-out keeps it (`limit` is not a condition and is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactFilter {
    ids: Option<Prefixes>,
    authors: Option<Prefixes>,
    /// Sorted, without duplicates.
    kinds: Option<Box<[u16]>>,
    since: Option<i64>,
    until: Option<i64>,
    /// All must hold; none = no condition.
    tags: Box<[TagCondition]>,
}

impl CompactFilter {
    /// The compact form of `filter`.
    pub fn new(filter: &Filter) -> CompactFilter {
        let kinds = filter.kinds.as_ref().map(|kinds| {
            let mut kinds = kinds.clone();
            kinds.sort_unstable();
            kinds.dedup();
            kinds.into_boxed_slice()
        });
        CompactFilter {
            ids: filter.ids.as_deref().map(Prefixes::new),
            authors: filter.authors.as_deref().map(Prefixes::new),
            kinds,
            since: filter.since,
            until: filter.until,
            tags: filter
                .tags
                .iter()
                .flatten()
                .map(|condition| TagCondition::new(&condition.name, &condition.values))
                .collect(),
        }
    }

    /// Does `event` satisfy the filter? Same answer as [`crate::protocol::matches`].
    pub fn matches(&self, event: &Event) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.matches(&event.id))
            && self.authors.as_ref().is_none_or(|authors| authors.matches(&event.pubkey))
            && self.kinds.as_ref().is_none_or(|kinds| kinds.binary_search(&event.kind).is_ok())
            && self.since.is_none_or(|since| event.created_at as i128 >= since as i128)
            && self.until.is_none_or(|until| event.created_at as i128 <= until as i128)
            && self.tags.iter().all(|condition| condition.holds(event))
    }
}

/// Tag values count one item per started [`TAG_VALUE_ITEM_BYTES`] bytes, so a few very
/// long values cannot hold more memory than the item cap allows.
pub const TAG_VALUE_ITEM_BYTES: usize = 64;

/// The filter items of a subscription's filters, as counted against
/// `limits.max_filter_items_per_connection`: every id and author prefix, every kind, and
/// every tag value (one per started [`TAG_VALUE_ITEM_BYTES`] bytes); at least one per filter.
pub fn filter_items(filters: &[Filter]) -> usize {
    filters
        .iter()
        .map(|filter| {
            let lists = filter.ids.as_ref().map_or(0, Vec::len)
                + filter.authors.as_ref().map_or(0, Vec::len)
                + filter.kinds.as_ref().map_or(0, Vec::len);
            let tags: usize = filter
                .tags
                .iter()
                .flatten()
                .flat_map(|condition| &condition.values)
                .map(|value| value.len().div_ceil(TAG_VALUE_ITEM_BYTES).max(1))
                .sum();
            (lists + tags).max(1)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::{matches, Tag, TagFilter};

    const VALUES: [&str; 4] = ["a", "b", "", "ab"];

    /// A prefix of one of two fixed 32-byte values, of any length 1..=32 (full ones take
    /// the sorted-array path, shorter ones the concatenated path).
    fn prefix() -> impl Strategy<Value = Vec<u8>> {
        (0..2usize, 1..=32usize).prop_map(|(which, len)| [[7u8; 32], [9u8; 32]][which][..len].to_vec())
    }

    fn filter() -> impl Strategy<Value = Filter> {
        (
            proptest::option::of(proptest::collection::vec(prefix(), 0..4)),
            proptest::option::of(proptest::collection::vec(prefix(), 0..4)),
            proptest::option::of(proptest::collection::vec(0u16..4, 0..4)),
            proptest::option::of(-2i64..4),
            proptest::option::of(-2i64..4),
            proptest::option::of(proptest::collection::vec(
                (0..2usize, proptest::collection::vec(0..4usize, 1..4)).prop_map(|(name, values)| TagFilter {
                    name: ["t", "e"][name].into(),
                    values: values.into_iter().map(|value| VALUES[value].into()).collect(),
                }),
                0..3,
            )),
        )
            .prop_map(|(ids, authors, kinds, since, until, tags)| Filter {
                ids,
                authors,
                kinds,
                since,
                until,
                tags,
                limit: None,
            })
    }

    fn event() -> impl Strategy<Value = Event> {
        (0..2usize, 0..2usize, 0u16..4, 0u64..3, proptest::collection::vec((0..2usize, 0..4usize), 0..3)).prop_map(
            |(id, pubkey, kind, created_at, tags)| Event {
                id: [[7u8; 32], [9u8; 32]][id],
                pubkey: [[7u8; 32], [9u8; 32]][pubkey],
                created_at,
                kind,
                content: Vec::new(),
                tags: tags.into_iter().map(|(name, value)| Tag::new(["t", "e"][name], [VALUES[value]])).collect(),
                sig: [0; 64],
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]

        #[test]
        fn compact_filters_agree_with_the_reference_matcher(filter in filter(), event in event()) {
            prop_assert_eq!(CompactFilter::new(&filter).matches(&event), matches(&filter, &event));
        }
    }

    #[test]
    fn items_are_counted_per_element_and_per_64_bytes_of_tag_value() {
        let filter = Filter {
            authors: Some(vec![vec![1; 32]; 3]),
            kinds: Some(vec![1, 2]),
            tags: Some(vec![TagFilter { name: "t".into(), values: vec!["x".into(), "y".repeat(65)] }]),
            ..Filter::default()
        };
        assert_eq!(filter_items(&[filter, Filter::default()]), 3 + 2 + 1 + 2 + 1);
    }
}
