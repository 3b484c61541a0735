//! Filters and the reference matcher (spec §9.1).
//!
//! [`matches`] is deliberately plain: it is the definition the SQLite query path and the
//! live fan-out index are tested against.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::error::ProtocolError;
use super::event::Event;
use super::limits::{Limits, MAX_TAG_NAME_BYTES};
use super::msgpack::{Reader, SeenKeys};

/// One tag condition: the event has a tag `name` whose first value is one of `values`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagFilter {
    /// Tag name to look for.
    pub name: String,
    /// Accepted first values (non-empty).
    pub values: Vec<String>,
}

/// A filter: every present condition must hold; within a list any element may match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Id byte prefixes, 1..=32 bytes each.
    pub ids: Option<Vec<Vec<u8>>>,
    /// Author pubkey byte prefixes, 1..=32 bytes each.
    pub authors: Option<Vec<Vec<u8>>>,
    /// Accepted kinds.
    pub kinds: Option<Vec<u16>>,
    /// created_at ≥ since.
    pub since: Option<i64>,
    /// created_at ≤ until.
    pub until: Option<i64>,
    /// Tag conditions, all of which must hold.
    pub tags: Option<Vec<TagFilter>>,
    /// Cap on stored events returned; `0` = live only.
    pub limit: Option<u64>,
}

/// The reference matcher: does `event` satisfy `filter`? (`limit` is not a condition.)
pub fn matches(filter: &Filter, event: &Event) -> bool {
    let prefix_of = |prefixes: &Vec<Vec<u8>>, bytes: &[u8]| prefixes.iter().any(|prefix| bytes.starts_with(prefix));
    filter.ids.as_ref().is_none_or(|ids| prefix_of(ids, &event.id))
        && filter.authors.as_ref().is_none_or(|authors| prefix_of(authors, &event.pubkey))
        && filter.kinds.as_ref().is_none_or(|kinds| kinds.contains(&event.kind))
        && filter.since.is_none_or(|since| event.created_at as i128 >= since as i128)
        && filter.until.is_none_or(|until| event.created_at as i128 <= until as i128)
        && filter.tags.as_ref().is_none_or(|conditions| {
            conditions.iter().all(|condition| {
                event.tags.iter().any(|tag| {
                    tag.name == condition.name
                        && tag.first_value().is_some_and(|first| condition.values.iter().any(|value| value == first))
                })
            })
        })
}

/// True if any filter of a subscription matches.
pub fn any_matches(filters: &[Filter], event: &Event) -> bool {
    filters.iter().any(|filter| matches(filter, event))
}

impl Filter {
    /// The effective stored-event cap: `limit` capped to `max_limit`, default `max_limit`.
    pub fn effective_limit(&self, max_limit: u64) -> u64 {
        self.limit.map_or(max_limit, |limit| limit.min(max_limit))
    }

    /// Checks the bounds of spec §9.1 (400 on any breach).
    pub fn check_bounds(&self, limits: &Limits) -> Result<(), ProtocolError> {
        let max = limits.max_filter_items;
        check_list_len("ids", self.ids.as_ref().map(Vec::len), max)?;
        check_list_len("authors", self.authors.as_ref().map(Vec::len), max)?;
        check_list_len("kinds", self.kinds.as_ref().map(Vec::len), max)?;
        check_list_len("tags", self.tags.as_ref().map(Vec::len), max)?;
        check_prefixes("ids", self.ids.as_deref())?;
        check_prefixes("authors", self.authors.as_deref())?;
        for condition in self.tags.iter().flatten() {
            if condition.name.is_empty() || condition.name.len() > MAX_TAG_NAME_BYTES {
                return Err(ProtocolError::invalid(format!("filter tag name must be 1..={MAX_TAG_NAME_BYTES} bytes")));
            }
            if condition.values.is_empty() {
                return Err(ProtocolError::invalid(format!("filter tag {:?} has no values", condition.name)));
            }
            check_list_len("tag values", Some(condition.values.len()), max)?;
        }
        Ok(())
    }

    /// Reads one strict Filter map: unknown, duplicate or mistyped keys are 400.
    pub fn read(reader: &mut Reader<'_>) -> Result<Filter, ProtocolError> {
        const KEYS: [&str; 7] = ["ids", "authors", "kinds", "since", "until", "tags", "limit"];
        let entries = reader.read_map_len("filter")?;
        let mut seen = SeenKeys::new();
        let mut filter = Filter::default();
        for _ in 0..entries {
            let key = reader.read_str("filter key")?;
            let index = KEYS
                .iter()
                .position(|known| *known == key)
                .ok_or_else(|| ProtocolError::invalid(format!("unknown filter key {key:?}")))?;
            seen.mark(index as u32, key)?;
            match index {
                0 => filter.ids = Some(read_bin_list(reader, "ids")?),
                1 => filter.authors = Some(read_bin_list(reader, "authors")?),
                2 => filter.kinds = Some(read_kinds(reader)?),
                3 => filter.since = Some(reader.read_i64("since")?),
                4 => filter.until = Some(reader.read_i64("until")?),
                5 => filter.tags = Some(read_tag_filters(reader)?),
                _ => filter.limit = Some(reader.read_uint("limit")?),
            }
        }
        Ok(filter)
    }
}

fn check_list_len(what: &str, len: Option<usize>, max: usize) -> Result<(), ProtocolError> {
    match len {
        Some(len) if len > max => {
            Err(ProtocolError::invalid(format!("filter {what} has {len} elements, the limit is {max}")))
        }
        _ => Ok(()),
    }
}

fn check_prefixes(what: &str, prefixes: Option<&[Vec<u8>]>) -> Result<(), ProtocolError> {
    match prefixes.into_iter().flatten().find(|prefix| prefix.is_empty() || prefix.len() > 32) {
        Some(prefix) => {
            Err(ProtocolError::invalid(format!("filter {what} prefix of {} bytes (must be 1..=32)", prefix.len())))
        }
        None => Ok(()),
    }
}

fn read_bin_list(reader: &mut Reader<'_>, what: &str) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let count = reader.read_array_len(what)?;
    let mut items = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        items.push(reader.read_bin(what)?.to_vec());
    }
    Ok(items)
}

fn read_kinds(reader: &mut Reader<'_>) -> Result<Vec<u16>, ProtocolError> {
    let count = reader.read_array_len("kinds")?;
    let mut kinds = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        let kind = reader.read_uint("kinds")?;
        kinds.push(
            u16::try_from(kind).map_err(|_| ProtocolError::invalid(format!("filter kind {kind} is above 65535")))?,
        );
    }
    Ok(kinds)
}

fn read_tag_filters(reader: &mut Reader<'_>) -> Result<Vec<TagFilter>, ProtocolError> {
    let count = reader.read_array_len("filter tags")?;
    let mut conditions = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        conditions.push(read_tag_filter(reader)?);
    }
    Ok(conditions)
}

fn read_tag_filter(reader: &mut Reader<'_>) -> Result<TagFilter, ProtocolError> {
    let entries = reader.read_map_len("filter tag")?;
    let mut seen = SeenKeys::new();
    let (mut name, mut values) = (None, None);
    for _ in 0..entries {
        match reader.read_str("filter tag key")? {
            "name" => {
                seen.mark(0, "name")?;
                name = Some(reader.read_str("filter tag name")?.to_owned());
            }
            "values" => {
                seen.mark(1, "values")?;
                values = Some(reader.read_str_list("filter tag values", "filter tag value")?);
            }
            other => return Err(ProtocolError::invalid(format!("unknown filter tag key {other:?}"))),
        }
    }
    match (name, values) {
        (Some(name), Some(values)) => Ok(TagFilter { name, values }),
        _ => Err(ProtocolError::invalid("filter tag needs both name and values")),
    }
}

impl Serialize for TagFilter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("values", &self.values)?;
        map.end()
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bins =
            |list: &Vec<Vec<u8>>| list.iter().map(|item| serde_bytes::ByteBuf::from(item.clone())).collect::<Vec<_>>();
        let present = [
            self.ids.is_some(),
            self.authors.is_some(),
            self.kinds.is_some(),
            self.since.is_some(),
            self.until.is_some(),
            self.tags.is_some(),
            self.limit.is_some(),
        ];
        let mut map = serializer.serialize_map(Some(present.iter().filter(|p| **p).count()))?;
        if let Some(ids) = &self.ids {
            map.serialize_entry("ids", &bins(ids))?;
        }
        if let Some(authors) = &self.authors {
            map.serialize_entry("authors", &bins(authors))?;
        }
        if let Some(kinds) = &self.kinds {
            map.serialize_entry("kinds", kinds)?;
        }
        if let Some(since) = &self.since {
            map.serialize_entry("since", since)?;
        }
        if let Some(until) = &self.until {
            map.serialize_entry("until", until)?;
        }
        if let Some(tags) = &self.tags {
            map.serialize_entry("tags", tags)?;
        }
        if let Some(limit) = &self.limit {
            map.serialize_entry("limit", limit)?;
        }
        map.end()
    }
}
