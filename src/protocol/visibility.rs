//! Who may see which events (spec §9.3): direct messages only the author and the keys
//! named in `p` tags, admin kinds only admins — in the stored phase and the live phase.
//!
//! This is the one home of the rule. Live fan-out calls [`visible`]; a storage backend
//! that filters in its own query language takes the kind bounds from [`dm_kinds`] and
//! [`admin_kinds`], which are read from the kind table (spec §5).

use std::ops::RangeInclusive;

use super::event::{Event, PublicKey};
use super::kind::{is_admin, is_direct_message, range_of, KindClass};
use super::tags::p_keys;

/// Who is asking: decides which DM and admin events are visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// The authenticated key.
    pub pubkey: PublicKey,
    /// Whether that key is an admin.
    pub is_admin: bool,
}

/// DM and admin visibility (spec §9.3) of one event.
pub fn visible(viewer: &Viewer, event: &Event) -> bool {
    if is_admin(event.kind) {
        return viewer.is_admin;
    }
    if is_direct_message(event.kind) {
        return viewer.pubkey == event.pubkey || p_keys(event).any(|key| key == viewer.pubkey);
    }
    true
}

/// The direct-message kinds (one range of the kind table).
pub fn dm_kinds() -> RangeInclusive<u16> {
    range_of(KindClass::DirectMessage)
}

/// The relay-administration kinds (one range of the kind table).
pub fn admin_kinds() -> RangeInclusive<u16> {
    range_of(KindClass::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tags::P;
    use crate::protocol::Tag;
    use ed25519_dalek::SigningKey;

    fn event(kind: u16, p: Option<PublicKey>) -> Event {
        let key = SigningKey::from_bytes(&[1; 32]);
        let tags = p.map(|key| vec![Tag::new(P, [hex::encode(key)])]).unwrap_or_default();
        Event::sign(&key, 1, kind, Vec::new(), tags).expect("sign")
    }

    #[test]
    fn bounds_come_from_the_kind_table() {
        assert_eq!(dm_kinds(), 2000..=2999);
        assert_eq!(admin_kinds(), 9000..=9099);
    }

    #[test]
    fn dm_visible_to_author_and_p_tagged_only() {
        let author = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
        let dm = event(2000, Some([9; 32]));
        let viewer = |pubkey| Viewer { pubkey, is_admin: false };
        assert!(visible(&viewer(author), &dm));
        assert!(visible(&viewer([9; 32]), &dm));
        assert!(!visible(&Viewer { pubkey: [8; 32], is_admin: true }, &dm), "admins do not read DMs");
    }

    #[test]
    fn admin_kinds_visible_to_admins_only() {
        let allow = event(9000, Some([9; 32]));
        assert!(visible(&Viewer { pubkey: [8; 32], is_admin: true }, &allow));
        assert!(!visible(&Viewer { pubkey: [9; 32], is_admin: false }, &allow));
        assert!(visible(&Viewer { pubkey: [9; 32], is_admin: false }, &event(1000, None)));
    }
}
