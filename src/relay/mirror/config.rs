//! The `mirrors:` section of relay.yaml (spec §17): parsing, validation naming the key,
//! and the mirror's key file.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::Deserialize;

use crate::protocol::filter::TagFilter;
use crate::protocol::Filter;
use crate::relay::config::ConfigError;

/// Default first reconnect delay (spec §17: 1 s).
pub const RETRY_MIN_MS: u64 = 1_000;
/// Default longest reconnect delay (spec §17: 5 min).
pub const RETRY_MAX_MS: u64 = 300_000;

fn retry_min_ms() -> u64 {
    RETRY_MIN_MS
}

fn retry_max_ms() -> u64 {
    RETRY_MAX_MS
}

/// One upstream to copy from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream's WebSocket URL (`ws://` or `wss://`); its info document is read from
    /// the same host and path over http(s). Also the name its cursor is stored under.
    pub url: String,
    /// Secret key file (64 hex characters, as `axon keygen` writes) this relay
    /// authenticates with upstream; relative paths are relative to relay.yaml's directory.
    pub key: PathBuf,
    /// What to copy, as in the wire format with ids and authors as hex prefixes. Empty:
    /// everything the upstream shows the mirror's key.
    #[serde(default)]
    pub filters: Vec<MirrorFilter>,
    /// Copy events whose author is not allowed on this relay.
    #[serde(default)]
    pub any_author: bool,
    /// First reconnect delay in milliseconds (doubles up to `retry_max_ms`).
    #[serde(default = "retry_min_ms")]
    pub retry_min_ms: u64,
    /// Longest reconnect delay in milliseconds; also the delay after 401/403.
    #[serde(default = "retry_max_ms")]
    pub retry_max_ms: u64,
}

/// A filter as written in relay.yaml: the wire format (spec §9.1) with hex prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFilter {
    /// Id prefixes, hex.
    pub ids: Option<Vec<String>>,
    /// Author prefixes, hex.
    pub authors: Option<Vec<String>>,
    /// Kinds.
    pub kinds: Option<Vec<u16>>,
    /// created_at ≥ since.
    pub since: Option<i64>,
    /// created_at ≤ until.
    pub until: Option<i64>,
    /// Tag conditions.
    pub tags: Option<Vec<MirrorTagFilter>>,
}

/// A tag condition as written in relay.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorTagFilter {
    /// Tag name.
    pub name: String,
    /// Accepted first values.
    pub values: Vec<String>,
}

fn invalid(key: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

fn hex_prefixes(key: &str, values: &Option<Vec<String>>) -> Result<Option<Vec<Vec<u8>>>, ConfigError> {
    let Some(values) = values else { return Ok(None) };
    values
        .iter()
        .enumerate()
        .map(|(index, value)| match hex::decode(value.to_ascii_lowercase()) {
            Ok(bytes) if (1..=32).contains(&bytes.len()) => Ok(bytes),
            _ => Err(invalid(format!("{key}[{index}]"), format!("{value:?} is not a hex prefix of 1 to 32 bytes"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl MirrorFilter {
    /// The wire filter; `key` names this filter in errors.
    pub fn to_filter(&self, key: &str) -> Result<Filter, ConfigError> {
        let tags = self.tags.as_ref().map(|tags| {
            tags.iter().map(|tag| TagFilter { name: tag.name.clone(), values: tag.values.clone() }).collect()
        });
        if let Some((index, _)) = self.tags.iter().flatten().enumerate().find(|(_, tag)| tag.values.is_empty()) {
            return Err(invalid(format!("{key}.tags[{index}].values"), "must not be empty"));
        }
        Ok(Filter {
            ids: hex_prefixes(&format!("{key}.ids"), &self.ids)?,
            authors: hex_prefixes(&format!("{key}.authors"), &self.authors)?,
            kinds: self.kinds.clone(),
            since: self.since,
            until: self.until,
            tags,
            limit: None,
        })
    }
}

impl MirrorConfig {
    /// The wire filters (`[{}]` when none are given); `key` is e.g. `mirrors[0]`.
    pub fn wire_filters(&self, key: &str) -> Result<Vec<Filter>, ConfigError> {
        if self.filters.is_empty() {
            return Ok(vec![Filter::default()]);
        }
        self.filters
            .iter()
            .enumerate()
            .map(|(index, filter)| filter.to_filter(&format!("{key}.filters[{index}]")))
            .collect()
    }

    /// Reads the key file; errors name `{key}.key`.
    pub fn signing_key(&self, key: &str) -> Result<SigningKey, ConfigError> {
        let text = std::fs::read_to_string(&self.key)
            .map_err(|error| invalid(format!("{key}.key"), format!("cannot read {}: {error}", self.key.display())))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
            invalid(format!("{key}.key"), format!("{} must hold 64 hex characters", self.key.display()))
        })?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// Checks every value except the key file (read by [`MirrorConfig::signing_key`]).
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err(invalid(format!("{key}.url"), "must start with ws:// or wss://"));
        }
        if self.key.as_os_str().is_empty() {
            return Err(invalid(format!("{key}.key"), "must not be empty"));
        }
        if self.retry_min_ms == 0 {
            return Err(invalid(format!("{key}.retry_min_ms"), "must be greater than 0"));
        }
        if self.retry_max_ms < self.retry_min_ms {
            return Err(invalid(format!("{key}.retry_max_ms"), "must be at least retry_min_ms"));
        }
        self.wire_filters(key).map(|_| ())
    }
}

/// Checks every mirror entry and that no url appears twice.
pub fn validate(mirrors: &[MirrorConfig]) -> Result<(), ConfigError> {
    for (index, mirror) in mirrors.iter().enumerate() {
        let key = format!("mirrors[{index}]");
        mirror.validate(&key)?;
        if mirrors[..index].iter().any(|earlier| earlier.url == mirror.url) {
            return Err(invalid(format!("{key}.url"), format!("{:?} is listed twice", mirror.url)));
        }
    }
    Ok(())
}

/// Makes relative key paths relative to `dir` (relay.yaml's directory).
pub fn resolve_keys(mirrors: &mut [MirrorConfig], dir: &Path) {
    for mirror in mirrors {
        if mirror.key.is_relative() {
            mirror.key = dir.join(&mirror.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::config::RelayConfig;

    #[test]
    fn mirrors_parse_with_defaults() {
        let text = "mirrors:\n  - url: \"ws://up.example/\"\n    key: \"m.key\"\n    filters: [{\"kinds\": [1000], \"authors\": [\"ab\"]}]\n";
        let config = RelayConfig::parse(text, "x").expect("valid");
        let mirror = &config.mirrors[0];
        assert!(!mirror.any_author);
        assert_eq!(mirror.retry_min_ms, RETRY_MIN_MS);
        let filters = mirror.wire_filters("mirrors[0]").expect("filters");
        assert_eq!(filters[0].authors, Some(vec![vec![0xab]]));
    }

    #[test]
    fn bad_mirror_values_are_named() {
        let cases = [
            ("mirrors:\n  - url: \"http://x\"\n    key: k\n", "mirrors[0].url"),
            (
                "mirrors:\n  - url: \"ws://x\"\n    key: k\n    filters: [{\"ids\": [\"zz\"]}]\n",
                "mirrors[0].filters[0].ids[0]",
            ),
            ("mirrors:\n  - url: \"ws://x\"\n    key: k\n  - url: \"ws://x\"\n    key: k\n", "mirrors[1].url"),
            ("mirrors:\n  - url: \"ws://x\"\n    key: k\n    filters: [{\"kind\": [1]}]\n", "kind"),
            ("mirrors:\n  - url: \"ws://x\"\n    kee: k\n", "kee"),
        ];
        for (text, named) in cases {
            let error = RelayConfig::parse(text, "relay.yaml").expect_err(text);
            assert!(error.to_string().contains(named), "{error} should name {named}");
        }
    }

    #[test]
    fn a_missing_key_file_is_named() {
        let mirror = MirrorConfig {
            url: "ws://x".into(),
            key: "/nonexistent/mirror.key".into(),
            filters: Vec::new(),
            any_author: false,
            retry_min_ms: 1,
            retry_max_ms: 1,
        };
        let error = mirror.signing_key("mirrors[3]").expect_err("missing");
        assert!(error.to_string().contains("mirrors[3].key"), "{error}");
    }
}
