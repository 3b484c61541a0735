//! Filters translated to SQL. Every query also applies visibility (DM and admin kinds,
//! spec §9.3), expiry, and an upper seq bound (the subscription's snapshot).

use std::collections::HashSet;

use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use super::{StoreError, StoredRow};
use crate::protocol::tags::P;
use crate::protocol::visibility::{admin_kinds, dm_kinds};
use crate::protocol::{Filter, Viewer};

/// SQL text plus its parameters, built up piece by piece.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<Value>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: Value) -> &mut Self {
        self.text.push('?');
        self.params.push(value);
        self
    }

    fn bind_list(&mut self, values: impl IntoIterator<Item = Value>) -> &mut Self {
        self.text.push('(');
        for (index, value) in values.into_iter().enumerate() {
            if index > 0 {
                self.text.push(',');
            }
            self.bind(value);
        }
        self.text.push(')');
        self
    }
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

/// `column` starts with one of `prefixes` (range scans, so indexes apply).
fn push_prefixes(sql: &mut Sql, column: &str, prefixes: &[Vec<u8>]) {
    if prefixes.is_empty() {
        sql.push("0");
        return;
    }
    sql.push("(");
    for (index, prefix) in prefixes.iter().enumerate() {
        if index > 0 {
            sql.push(" OR ");
        }
        if prefix.len() == 32 {
            sql.push(column).push(" = ").bind(Value::Blob(prefix.clone()));
            continue;
        }
        sql.push("(").push(column).push(" >= ").bind(Value::Blob(prefix.clone()));
        if let Some(upper) = prefix_upper_bound(prefix) {
            sql.push(" AND ").push(column).push(" < ").bind(Value::Blob(upper));
        }
        sql.push(")");
    }
    sql.push(")");
}

/// How a filter's tag conditions are tested against a row of `events AS e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagCheck {
    /// A probe of the tag index for this row (name, value, created_at, seq): cheap per row,
    /// for queries that walk an events index in order and stop at the limit.
    PerRow,
    /// Membership in the set of seqs carrying the tag: for seq-ordered replay, where a
    /// rare tag would otherwise mean probing every event after the cursor.
    SeqSet,
}

/// Tag rows of `e` with `name` and one of `values` (tags rows copy the event's created_at,
/// so the tags table's whole key is bound).
fn push_tag_probe(sql: &mut Sql, name: &str, values: &[String]) {
    sql.push("EXISTS (SELECT 1 FROM tags AS x WHERE x.name = ").bind(Value::Text(name.to_owned()));
    sql.push(" AND x.value IN ").bind_list(values.iter().map(|value| Value::Text(value.clone())));
    sql.push(" AND x.created_at = e.created_at AND x.seq = e.seq)");
}

/// The conditions of one filter (spec §9.1) on `events AS e`, ANDed, except the tag
/// condition at `skip_tag` (already applied by the caller).
fn push_filter(sql: &mut Sql, filter: &Filter, tag_check: TagCheck, skip_tag: Option<usize>) {
    sql.push("(1");
    if let Some(ids) = &filter.ids {
        sql.push(" AND ");
        push_prefixes(sql, "e.id", ids);
    }
    if let Some(authors) = &filter.authors {
        sql.push(" AND ");
        push_prefixes(sql, "e.pubkey", authors);
    }
    if let Some(kinds) = &filter.kinds {
        sql.push(" AND e.kind IN ").bind_list(kinds.iter().map(|kind| Value::Integer(*kind as i64)));
    }
    if let Some(since) = filter.since {
        sql.push(" AND e.created_at >= ").bind(Value::Integer(since));
    }
    if let Some(until) = filter.until {
        sql.push(" AND e.created_at <= ").bind(Value::Integer(until));
    }
    for (index, condition) in filter.tags.iter().flatten().enumerate() {
        if Some(index) == skip_tag {
            continue;
        }
        sql.push(" AND ");
        match tag_check {
            TagCheck::PerRow => push_tag_probe(sql, &condition.name, &condition.values),
            TagCheck::SeqSet => {
                sql.push("e.seq IN (SELECT seq FROM tags WHERE name = ").bind(Value::Text(condition.name.clone()));
                sql.push(" AND value IN ").bind_list(condition.values.iter().map(|value| Value::Text(value.clone())));
                sql.push(")");
            }
        }
    }
    sql.push(")");
}

/// Visibility (spec §9.3), expiry (spec §4) and the seq window, on `events AS e`.
fn push_common(sql: &mut Sql, viewer: &Viewer, after: u64, snapshot: u64, now: u64) {
    // Saturating, never `as i64`: an after_seq of 2^63 or more must select nothing
    // (every seq is at most i64::MAX), not wrap to a negative bound that selects everything.
    sql.push(" AND e.seq > ").bind(Value::Integer(clamp_limit(after)));
    sql.push(" AND e.seq <= ").bind(Value::Integer(clamp_limit(snapshot)));
    sql.push(" AND (e.expires_at IS NULL OR e.expires_at > ").bind(Value::Integer(clamp_limit(now))).push(")");
    push_visibility(sql, viewer);
}

/// Visibility (spec §9.3, [`crate::protocol::visibility`]): the kind bounds come from the
/// kind table and are bound as parameters.
fn push_visibility(sql: &mut Sql, viewer: &Viewer) {
    let dm = dm_kinds();
    sql.push(" AND (e.kind < ").bind(Value::Integer(i64::from(*dm.start())));
    sql.push(" OR e.kind > ").bind(Value::Integer(i64::from(*dm.end())));
    sql.push(" OR e.pubkey = ").bind(Value::Blob(viewer.pubkey.to_vec()));
    sql.push(" OR ");
    push_tag_probe(sql, P, &[hex::encode(viewer.pubkey)]);
    sql.push(")");
    if !viewer.is_admin {
        let admin = admin_kinds();
        sql.push(" AND (e.kind < ").bind(Value::Integer(i64::from(*admin.start())));
        sql.push(" OR e.kind > ").bind(Value::Integer(i64::from(*admin.end()))).push(")");
    }
}

fn rows(connection: &Connection, sql: &Sql) -> Result<Vec<(StoredRow, i64)>, StoreError> {
    let mut statement = connection.prepare_cached(&sql.text)?;
    let mapped = statement.query_map(params_from_iter(sql.params.iter()), |row| {
        let seq: i64 = row.get(0)?;
        let raw: Vec<u8> = row.get(1)?;
        let created_at: i64 = row.get(2)?;
        Ok((StoredRow { seq: seq as u64, raw: Bytes::from(raw) }, created_at))
    })?;
    mapped.collect::<Result<Vec<_>, _>>().map_err(StoreError::from)
}

/// The tag condition to walk the tag index by, if the filter should be driven by one: a
/// filter with ids or authors walks the events indexes instead (those are the selective
/// conditions there); otherwise the condition with the fewest values.
fn driving_tag(filter: &Filter) -> Option<usize> {
    if filter.ids.is_some() || filter.authors.is_some() {
        return None;
    }
    let conditions = filter.tags.as_ref()?;
    (0..conditions.len()).min_by_key(|&index| conditions[index].values.len())
}

/// One query per value of the driving tag, each walking the tags table's key newest first and
/// stopping at the limit: the cost follows the limit, not how common the tag is.
fn newest_by_tag(
    connection: &Connection,
    filter: &Filter,
    driver: usize,
    window: &Window<'_>,
    limit: u64,
) -> Result<Vec<(StoredRow, i64)>, StoreError> {
    let Some(condition) = filter.tags.as_ref().and_then(|conditions| conditions.get(driver)) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for value in &condition.values {
        let mut sql = Sql::default();
        sql.push("SELECT e.seq, e.raw, e.created_at FROM tags AS t CROSS JOIN events AS e ON e.seq = t.seq");
        sql.push(" WHERE t.name = ").bind(Value::Text(condition.name.clone()));
        sql.push(" AND t.value = ").bind(Value::Text(value.clone()));
        if let Some(kinds) = &filter.kinds {
            sql.push(" AND t.kind IN ").bind_list(kinds.iter().map(|kind| Value::Integer(*kind as i64)));
        }
        if let Some(since) = filter.since {
            sql.push(" AND t.created_at >= ").bind(Value::Integer(since));
        }
        if let Some(until) = filter.until {
            sql.push(" AND t.created_at <= ").bind(Value::Integer(until));
        }
        sql.push(" AND ");
        push_filter(&mut sql, filter, TagCheck::PerRow, Some(driver));
        push_common(&mut sql, window.viewer, 0, window.snapshot, window.now);
        sql.push(" ORDER BY t.created_at DESC, t.seq DESC LIMIT ").bind(Value::Integer(clamp_limit(limit)));
        found.extend(rows(connection, &sql)?);
    }
    Ok(found)
}

/// One query walking the events indexes newest first, tag conditions probed per row.
fn newest_by_event(
    connection: &Connection,
    filter: &Filter,
    window: &Window<'_>,
    limit: u64,
) -> Result<Vec<(StoredRow, i64)>, StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT e.seq, e.raw, e.created_at FROM events AS e WHERE ");
    push_filter(&mut sql, filter, TagCheck::PerRow, None);
    push_common(&mut sql, window.viewer, 0, window.snapshot, window.now);
    sql.push(" ORDER BY e.created_at DESC, e.seq DESC LIMIT ").bind(Value::Integer(clamp_limit(limit)));
    rows(connection, &sql)
}

/// Who asks, up to which seq, and when (for expiry).
struct Window<'a> {
    viewer: &'a Viewer,
    snapshot: u64,
    now: u64,
}

/// A u64 bound (limit, seq, time) as an SQLite integer, saturating at i64::MAX.
fn clamp_limit(limit: u64) -> i64 {
    limit.min(i64::MAX as u64) as i64
}

/// Newest first: created_at descending, then seq descending.
fn sort_newest_first(rows: &mut [(StoredRow, i64)]) {
    rows.sort_by(|(a, a_time), (b, b_time)| b_time.cmp(a_time).then(b.seq.cmp(&a.seq)));
}

/// Each filter's newest `limit` events; the union without duplicates, newest first.
pub fn newest(
    connection: &Connection,
    filters: &[Filter],
    viewer: &Viewer,
    snapshot: u64,
    now: u64,
    max_limit: u64,
) -> Result<Vec<StoredRow>, StoreError> {
    let window = Window { viewer, snapshot, now };
    let mut seen = HashSet::new();
    let mut merged: Vec<(StoredRow, i64)> = Vec::new();
    for filter in filters {
        let limit = filter.effective_limit(max_limit);
        if limit == 0 {
            continue;
        }
        let mut found = match driving_tag(filter) {
            Some(driver) => newest_by_tag(connection, filter, driver, &window, limit)?,
            None => newest_by_event(connection, filter, &window, limit)?,
        };
        // Per-value queries each return up to `limit`: keep the filter's newest `limit`.
        sort_newest_first(&mut found);
        let mut distinct = HashSet::new();
        found.retain(|(row, _)| distinct.insert(row.seq));
        found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        for (row, created_at) in found {
            if seen.insert(row.seq) {
                merged.push((row, created_at));
            }
        }
    }
    sort_newest_first(&mut merged);
    Ok(merged.into_iter().map(|(row, _)| row).collect())
}

/// Up to `page` events matching any filter with `after < seq ≤ snapshot`, oldest first.
pub fn replay_page(
    connection: &Connection,
    filters: &[Filter],
    viewer: &Viewer,
    after: u64,
    snapshot: u64,
    now: u64,
    page: usize,
) -> Result<Vec<StoredRow>, StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT e.seq, e.raw, e.created_at FROM events AS e WHERE (0");
    for filter in filters {
        sql.push(" OR ");
        push_filter(&mut sql, filter, TagCheck::SeqSet, None);
    }
    sql.push(")");
    push_common(&mut sql, viewer, after, snapshot, now);
    sql.push(" ORDER BY e.seq ASC LIMIT ").bind(Value::Integer(page as i64));
    Ok(rows(connection, &sql)?.into_iter().map(|(row, _)| row).collect())
}

/// The highest seq ever assigned, including deleted rows (AUTOINCREMENT's counter).
/// The stored cursor of a mirror's upstream (spec §17); 0 if none.
pub fn upstream_cursor(connection: &Connection, upstream: &str) -> Result<u64, StoreError> {
    let seq: Option<i64> = connection
        .query_row("SELECT last_seq FROM mirror_state WHERE upstream = ?1", [upstream], |row| row.get(0))
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })?;
    Ok(seq.unwrap_or(0).max(0) as u64)
}

pub fn last_seq(connection: &Connection) -> Result<u64, StoreError> {
    let seq: Option<i64> = connection
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |row| row.get(0))
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })?;
    Ok(seq.unwrap_or(0) as u64)
}

/// Every admin event, oldest first.
pub fn admin_log(connection: &Connection) -> Result<Vec<StoredRow>, StoreError> {
    let admin = admin_kinds();
    let mut sql = Sql::default();
    sql.push("SELECT seq, raw, created_at FROM events WHERE kind BETWEEN ")
        .bind(Value::Integer(i64::from(*admin.start())));
    sql.push(" AND ").bind(Value::Integer(i64::from(*admin.end()))).push(" ORDER BY seq ASC");
    Ok(rows(connection, &sql)?.into_iter().map(|(row, _)| row).collect())
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn upper_bounds() {
        assert_eq!(prefix_upper_bound(&[0x12]), Some(vec![0x13]));
        assert_eq!(prefix_upper_bound(&[0x12, 0xff]), Some(vec![0x13]));
        assert_eq!(prefix_upper_bound(&[0xff, 0xff]), None);
    }
}
