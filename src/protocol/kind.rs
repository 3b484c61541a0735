//! Kind ranges and the relay behaviour attached to each (spec §5).

/// The class of a kind, which decides how the relay treats events of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindClass {
    /// 0–999: identity and metadata.
    Metadata,
    /// 1000–1999: messages.
    Message,
    /// 2000–2999: direct messages, visible to author and `p`-tagged keys only.
    DirectMessage,
    /// 3000–3999: fanned out, never stored.
    Ephemeral,
    /// 5000–5999: job requests.
    JobRequest,
    /// 6000–6999: job results.
    JobResult,
    /// 7000–7999: job feedback.
    JobFeedback,
    /// 9000–9099: relay administration, admins only.
    Admin,
    /// Any range the spec leaves unassigned (4000–4999, 8000–8999, 9100–65535).
    Unassigned,
}

/// Job request kinds (spec §5, §14): what queues offer.
pub const JOB_REQUESTS: std::ops::RangeInclusive<u16> = 5000..=5999;

/// The kind an admin publishes to allow keys (spec §10).
pub const KIND_ALLOW: u16 = 9000;
/// The kind an admin publishes to revoke keys (spec §10).
pub const KIND_REVOKE: u16 = 9001;
/// The kind an admin publishes to re-queue a dead job in a group (this relay's choice in
/// the admin range; see docs/protocol.md).
pub const KIND_REQUEUE: u16 = 9002;

/// One row of the kind table, as published in the info document.
#[derive(Debug, Clone, Copy)]
pub struct KindRange {
    /// First kind of the range.
    pub first: u16,
    /// Last kind of the range (inclusive).
    pub last: u16,
    /// The class every kind in the range belongs to.
    pub class: KindClass,
    /// What the range is for.
    pub meaning: &'static str,
    /// What the relay does with it.
    pub behaviour: &'static str,
}

/// The kind table of spec §5, in order, covering 0..=65535 without gaps.
pub const KIND_RANGES: &[KindRange] = &[
    KindRange {
        first: 0,
        last: 999,
        class: KindClass::Metadata,
        meaning: "identity and metadata",
        behaviour: "stored",
    },
    KindRange { first: 1000, last: 1999, class: KindClass::Message, meaning: "messages", behaviour: "stored" },
    KindRange {
        first: 2000,
        last: 2999,
        class: KindClass::DirectMessage,
        meaning: "direct messages",
        behaviour: "stored; delivered only to the author and p-tagged keys",
    },
    KindRange {
        first: 3000,
        last: 3999,
        class: KindClass::Ephemeral,
        meaning: "ephemeral",
        behaviour: "fanned out live, never stored",
    },
    KindRange { first: 4000, last: 4999, class: KindClass::Unassigned, meaning: "unassigned", behaviour: "stored" },
    KindRange {
        first: 5000,
        last: 5999,
        class: KindClass::JobRequest,
        meaning: "job requests",
        behaviour: "stored; expires_at enforced",
    },
    KindRange { first: 6000, last: 6999, class: KindClass::JobResult, meaning: "job results", behaviour: "stored" },
    KindRange { first: 7000, last: 7999, class: KindClass::JobFeedback, meaning: "job feedback", behaviour: "stored" },
    KindRange { first: 8000, last: 8999, class: KindClass::Unassigned, meaning: "unassigned", behaviour: "stored" },
    KindRange {
        first: 9000,
        last: 9099,
        class: KindClass::Admin,
        meaning: "relay administration",
        behaviour: "admins only; stored; delivered only to admins",
    },
    KindRange { first: 9100, last: 65535, class: KindClass::Unassigned, meaning: "unassigned", behaviour: "stored" },
];

/// The class of `kind`.
pub fn class_of(kind: u16) -> KindClass {
    KIND_RANGES
        .iter()
        .find(|range| range.first <= kind && kind <= range.last)
        .map_or(KindClass::Unassigned, |range| range.class)
}

/// The kinds of `class`, for a class that is one range of the table (every class but
/// [`KindClass::Unassigned`]); an empty range if the class is not in the table.
pub fn range_of(class: KindClass) -> std::ops::RangeInclusive<u16> {
    KIND_RANGES
        .iter()
        .find(|range| range.class == class)
        .map_or(std::ops::RangeInclusive::new(1, 0), |range| range.first..=range.last)
}

/// True for kinds that are fanned out but never stored (3000–3999).
pub fn is_ephemeral(kind: u16) -> bool {
    class_of(kind) == KindClass::Ephemeral
}

/// True for relay administration kinds (9000–9099).
pub fn is_admin(kind: u16) -> bool {
    class_of(kind) == KindClass::Admin
}

/// True for direct-message kinds (2000–2999).
pub fn is_direct_message(kind: u16) -> bool {
    class_of(kind) == KindClass::DirectMessage
}

/// True for job-request kinds (5000–5999).
pub fn is_job_request(kind: u16) -> bool {
    class_of(kind) == KindClass::JobRequest
}

/// True when events of `kind` are visible only to some connections (DM and admin kinds).
pub fn is_restricted_visibility(kind: u16) -> bool {
    is_direct_message(kind) || is_admin(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_kind_without_gaps() {
        let mut next = 0u32;
        for range in KIND_RANGES {
            assert_eq!(range.first as u32, next);
            assert!(range.first <= range.last);
            next = range.last as u32 + 1;
        }
        assert_eq!(next, 65536);
    }

    #[test]
    fn boundaries() {
        assert_eq!(class_of(0), KindClass::Metadata);
        assert_eq!(class_of(1999), KindClass::Message);
        assert!(is_direct_message(2000) && is_direct_message(2999));
        assert!(!is_ephemeral(2999) && is_ephemeral(3000) && is_ephemeral(3999));
        assert!(!is_ephemeral(4000));
        assert!(is_job_request(5000) && !is_job_request(6000));
        assert!(is_admin(9000) && is_admin(9099) && !is_admin(9100) && !is_admin(8999));
        assert_eq!(class_of(65535), KindClass::Unassigned);
    }
}
