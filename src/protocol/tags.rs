//! Tags with meaning to the relay (spec §4): `expires_at` and `p`.

use super::error::ProtocolError;
use super::event::{Event, PublicKey};

/// Name of the expiry tag.
pub const EXPIRES_AT: &str = "expires_at";
/// Name of the pubkey-reference tag.
pub const P: &str = "p";
/// Name of the event-reference tag (a job result names its job with it, spec §14).
pub const E: &str = "e";
/// Name of the tag a REQUEUE event names its group with (docs/protocol.md).
pub const GROUP: &str = "group";

/// The event's expiry time, if it has an `expires_at` tag.
///
/// The first value must be ASCII digits only (no sign) and fit in a u64, else 400. A tag
/// with no value is malformed (400). With several `expires_at` tags (legal when their first
/// values differ) the earliest time applies.
pub fn expires_at(event: &Event) -> Result<Option<u64>, ProtocolError> {
    let mut earliest: Option<u64> = None;
    for tag in event.tags.iter().filter(|tag| tag.name == EXPIRES_AT) {
        let value = tag.first_value().ok_or_else(|| ProtocolError::invalid("expires_at tag has no value"))?;
        let time = parse_unix_time(value)
            .ok_or_else(|| ProtocolError::invalid(format!("expires_at {value:?} is not a decimal unix time")))?;
        earliest = Some(earliest.map_or(time, |current| current.min(time)));
    }
    Ok(earliest)
}

/// Parses ASCII decimal digits (at least one, no sign) into a u64.
pub fn parse_unix_time(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Parses a `p` value: exactly 64 lowercase hex characters.
pub fn parse_p_value(value: &str) -> Option<PublicKey> {
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(value, &mut key).ok()?;
    Some(key)
}

/// The well-formed `p` keys an event names (first values only; malformed ones skipped).
pub fn p_keys(event: &Event) -> impl Iterator<Item = PublicKey> + '_ {
    event.tag_values(P).filter_map(parse_p_value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::event::Tag;

    fn event_with(tags: Vec<Tag>) -> Event {
        Event { id: [0; 32], pubkey: [0; 32], created_at: 0, kind: 1, content: vec![], sig: [0; 64], tags }
    }

    #[test]
    fn expires_at_parsing() {
        assert_eq!(expires_at(&event_with(vec![])), Ok(None));
        assert_eq!(expires_at(&event_with(vec![Tag::new("expires_at", ["100"])])), Ok(Some(100)));
        assert_eq!(expires_at(&event_with(vec![Tag::new("expires_at", ["007"])])), Ok(Some(7)));
        assert_eq!(
            expires_at(&event_with(vec![Tag::new("expires_at", ["300"]), Tag::new("expires_at", ["200"])])),
            Ok(Some(200))
        );
        for bad in ["", "+1", "-1", "1.5", "1e3", " 1", "18446744073709551616", "１"] {
            assert!(expires_at(&event_with(vec![Tag::new("expires_at", [bad])])).is_err(), "{bad:?}");
        }
        assert!(expires_at(&event_with(vec![Tag::new::<_, String>("expires_at", [])])).is_err());
    }

    #[test]
    fn p_values() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_p_value(&hex), Some([0xab; 32]));
        assert_eq!(parse_p_value(&hex.to_uppercase()), None);
        assert_eq!(parse_p_value(&hex[..62]), None);
        assert_eq!(parse_p_value(&"zz".repeat(32)), None);
    }
}
