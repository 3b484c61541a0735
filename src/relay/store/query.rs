//! Filters translated to SQL. Every query also applies visibility (DM and admin kinds,
//! spec §9.3), expiry, and an upper seq bound (the subscription's snapshot).

use std::collections::HashSet;

use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use super::{StoreError, StoredRow};
use crate::protocol::{Filter, PublicKey};

/// Who is asking: decides which DM and admin events are visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// The authenticated key.
    pub pubkey: PublicKey,
    /// Whether that key is an admin.
    pub is_admin: bool,
}

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

/// The conditions of one filter (spec §9.1), ANDed.
fn push_filter(sql: &mut Sql, filter: &Filter) {
    sql.push("(1");
    if let Some(ids) = &filter.ids {
        sql.push(" AND ");
        push_prefixes(sql, "id", ids);
    }
    if let Some(authors) = &filter.authors {
        sql.push(" AND ");
        push_prefixes(sql, "pubkey", authors);
    }
    if let Some(kinds) = &filter.kinds {
        sql.push(" AND kind IN ").bind_list(kinds.iter().map(|kind| Value::Integer(*kind as i64)));
    }
    if let Some(since) = filter.since {
        sql.push(" AND created_at >= ").bind(Value::Integer(since));
    }
    if let Some(until) = filter.until {
        sql.push(" AND created_at <= ").bind(Value::Integer(until));
    }
    for condition in filter.tags.iter().flatten() {
        sql.push(" AND seq IN (SELECT seq FROM tags WHERE name = ").bind(Value::Text(condition.name.clone()));
        sql.push(" AND value IN ").bind_list(condition.values.iter().map(|value| Value::Text(value.clone())));
        sql.push(")");
    }
    sql.push(")");
}

/// Visibility (spec §9.3), expiry (spec §4) and the seq window.
fn push_common(sql: &mut Sql, viewer: &Viewer, after: u64, snapshot: u64, now: u64) {
    sql.push(" AND seq > ").bind(Value::Integer(after as i64));
    sql.push(" AND seq <= ").bind(Value::Integer(snapshot.min(i64::MAX as u64) as i64));
    sql.push(" AND (expires_at IS NULL OR expires_at > ")
        .bind(Value::Integer(now.min(i64::MAX as u64) as i64))
        .push(")");
    sql.push(" AND (kind < 2000 OR kind > 2999 OR pubkey = ").bind(Value::Blob(viewer.pubkey.to_vec()));
    sql.push(" OR seq IN (SELECT seq FROM tags WHERE name = 'p' AND value = ")
        .bind(Value::Text(hex::encode(viewer.pubkey)))
        .push("))");
    if !viewer.is_admin {
        sql.push(" AND (kind < 9000 OR kind > 9099)");
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

/// Each filter's newest `limit` events; the union without duplicates, newest first.
pub fn newest(
    connection: &Connection,
    filters: &[Filter],
    viewer: &Viewer,
    snapshot: u64,
    now: u64,
    max_limit: u64,
) -> Result<Vec<StoredRow>, StoreError> {
    let mut seen = HashSet::new();
    let mut merged: Vec<(StoredRow, i64)> = Vec::new();
    for filter in filters {
        let limit = filter.effective_limit(max_limit);
        if limit == 0 {
            continue;
        }
        let mut sql = Sql::default();
        sql.push("SELECT seq, raw, created_at FROM events WHERE ");
        push_filter(&mut sql, filter);
        push_common(&mut sql, viewer, 0, snapshot, now);
        sql.push(" ORDER BY created_at DESC, seq DESC LIMIT ").bind(Value::Integer(limit.min(i64::MAX as u64) as i64));
        for (row, created_at) in rows(connection, &sql)? {
            if seen.insert(row.seq) {
                merged.push((row, created_at));
            }
        }
    }
    merged.sort_by(|(a, a_time), (b, b_time)| b_time.cmp(a_time).then(b.seq.cmp(&a.seq)));
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
    sql.push("SELECT seq, raw, created_at FROM events WHERE (0");
    for filter in filters {
        sql.push(" OR ");
        push_filter(&mut sql, filter);
    }
    sql.push(")");
    push_common(&mut sql, viewer, after, snapshot, now);
    sql.push(" ORDER BY seq ASC LIMIT ").bind(Value::Integer(page as i64));
    Ok(rows(connection, &sql)?.into_iter().map(|(row, _)| row).collect())
}

/// The highest seq ever assigned, including deleted rows (AUTOINCREMENT's counter).
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
    let sql = Sql {
        text: "SELECT seq, raw, created_at FROM events WHERE kind BETWEEN 9000 AND 9099 ORDER BY seq ASC".into(),
        params: vec![],
    };
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
