//! Size bounds the protocol core enforces (spec §2, §9.1); the relay configures them.

/// The bounds an event, a filter or a subscription is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `content` in bytes (larger → 413).
    pub max_content_bytes: usize,
    /// Most tags per event.
    pub max_tags: usize,
    /// Most values per tag.
    pub max_tag_values: usize,
    /// Largest tag value in bytes.
    pub max_tag_value_bytes: usize,
    /// Most filters per subscription.
    pub max_filters: usize,
    /// Most elements per list in a filter.
    pub max_filter_items: usize,
}

/// Tag names are 1..=64 bytes; the spec gives no setting to change this.
pub const MAX_TAG_NAME_BYTES: usize = 64;
/// `sub_id` is 1..=64 bytes.
pub const MAX_SUB_ID_BYTES: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_content_bytes: 65536,
            max_tags: 256,
            max_tag_values: 16,
            max_tag_value_bytes: 1024,
            max_filters: 16,
            max_filter_items: 256,
        }
    }
}
