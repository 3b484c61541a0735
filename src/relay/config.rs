//! relay.yaml: keys and defaults of spec §10, strict parsing, validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::protocol::tags::parse_p_value;
use crate::protocol::{Limits, PublicKey};

/// Why a configuration was refused. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// YAML syntax, an unknown key or a mistyped value.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// serde_yaml's message, which names the key and line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// The `limits:` section; every key optional, defaults from the spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest WebSocket message (larger → close [`crate::protocol::close::TOO_BIG`]).
    pub max_frame_bytes: usize,
    /// Largest event content (larger → 413).
    pub max_content_bytes: usize,
    /// Most tags per event.
    pub max_tags: usize,
    /// Most values per tag.
    pub max_tag_values: usize,
    /// Largest tag value.
    pub max_tag_value_bytes: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Filters per subscription.
    pub max_filters: usize,
    /// Elements per list in a filter.
    pub max_filter_items: usize,
    /// Filter items over all subscriptions of a connection (Axon extension; see
    /// [`crate::relay::compact::filter_items`] for what counts).
    pub max_filter_items_per_connection: usize,
    /// Cap and default for a filter's `limit`.
    pub max_limit: u64,
    /// Seconds a connection may take to authenticate.
    pub auth_timeout_secs: u64,
    /// Seconds between keep-alive pings.
    pub ping_interval_secs: u64,
    /// How far in the future `created_at` may be.
    pub max_future_skew_secs: u64,
    /// Frames queued per connection before a subscription overflows.
    pub outbound_queue: usize,
    /// Bytes queued per connection before a subscription overflows (Axon extension).
    pub outbound_bytes: usize,
    /// Publishes per second per key (0 = unlimited).
    pub publish_per_second: u32,
    /// Burst above the rate.
    pub publish_burst: u32,
    /// Connections in total.
    pub max_connections: usize,
    /// Connections per IP (0 = unlimited).
    pub max_connections_per_ip: usize,
    /// Authenticated connections per key (0 = unlimited). Not in spec §10; see docs.
    pub max_connections_per_key: usize,
    /// New WebSocket handshakes per second per IP (0 = unlimited). Not in spec §10.
    pub handshakes_per_second_per_ip: u32,
    /// Seconds to drain on shutdown.
    pub drain_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 131072,
            max_content_bytes: 65536,
            max_tags: 256,
            max_tag_values: 16,
            max_tag_value_bytes: 1024,
            max_subscriptions: 32,
            max_filters: 16,
            max_filter_items: 256,
            max_filter_items_per_connection: 4096,
            max_limit: 500,
            auth_timeout_secs: 10,
            ping_interval_secs: 30,
            max_future_skew_secs: 900,
            outbound_queue: 4096,
            outbound_bytes: 256 * 1024,
            publish_per_second: 0,
            publish_burst: 0,
            max_connections: 10000,
            max_connections_per_ip: 0,
            max_connections_per_key: 0,
            handshakes_per_second_per_ip: 0,
            drain_timeout_secs: 10,
        }
    }
}

impl LimitsConfig {
    /// The bounds the protocol core checks.
    pub fn protocol(&self) -> Limits {
        Limits {
            max_content_bytes: self.max_content_bytes,
            max_tags: self.max_tags,
            max_tag_values: self.max_tag_values,
            max_tag_value_bytes: self.max_tag_value_bytes,
            max_filters: self.max_filters,
            max_filter_items: self.max_filter_items,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_frame_bytes", self.max_frame_bytes as u64),
            ("max_subscriptions", self.max_subscriptions as u64),
            ("max_filters", self.max_filters as u64),
            ("max_filter_items", self.max_filter_items as u64),
            ("max_limit", self.max_limit),
            ("auth_timeout_secs", self.auth_timeout_secs),
            ("ping_interval_secs", self.ping_interval_secs),
            ("outbound_queue", self.outbound_queue as u64),
            ("outbound_bytes", self.outbound_bytes as u64),
            ("max_filter_items_per_connection", self.max_filter_items_per_connection as u64),
            ("max_connections", self.max_connections as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(&format!("limits.{key}"), "must be greater than 0"));
        }
        // The wire encodes these lengths in uint16/uint32 fields (spec §3).
        if self.max_tags > u16::MAX as usize {
            return Err(invalid("limits.max_tags", "must be at most 65535"));
        }
        if self.max_tag_values > u16::MAX as usize {
            return Err(invalid("limits.max_tag_values", "must be at most 65535"));
        }
        if self.max_content_bytes > u32::MAX as usize {
            return Err(invalid("limits.max_content_bytes", "must fit in 32 bits"));
        }
        if self.max_frame_bytes < 1024 {
            return Err(invalid("limits.max_frame_bytes", "must be at least 1024"));
        }
        if self.publish_burst > 0 && self.publish_per_second == 0 {
            return Err(invalid("limits.publish_burst", "needs publish_per_second > 0"));
        }
        Ok(())
    }
}

/// One age rule: events of kinds `kinds[0]..=kinds[1]` are deleted `max_age_secs` after
/// their `created_at`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeRule {
    /// First and last kind of the range (inclusive).
    pub kinds: [u16; 2],
    /// Age limit in seconds.
    pub max_age_secs: u64,
}

/// The optional `retention:` section (an Axon extension to spec §10). Admin events
/// (9000–9099) are never pruned by it: they are the allowlist's log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Keep at most this many events, deleting the oldest by seq (0 = unlimited).
    pub max_events: u64,
    /// Age limits per kind range.
    pub max_age: Vec<AgeRule>,
}

impl RetentionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (index, rule) in self.max_age.iter().enumerate() {
            if rule.kinds[0] > rule.kinds[1] {
                return Err(invalid(&format!("retention.max_age[{index}].kinds"), "first kind is above the last"));
            }
            if rule.max_age_secs == 0 {
                return Err(invalid(&format!("retention.max_age[{index}].max_age_secs"), "must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// The `jobs:` section (spec §14).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// A job whose offer numbered this ends without completion is dead.
    pub max_attempts: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { max_attempts: 5 }
    }
}

/// The whole relay.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Listen address.
    pub addr: String,
    /// SQLite file.
    pub db: PathBuf,
    /// Bound into AUTH signatures, byte for byte.
    pub relay_url: String,
    /// Admin pubkeys (hex).
    pub admins: Vec<String>,
    /// Statically allowed pubkeys (hex).
    pub allowlist: Vec<String>,
    /// Limits.
    pub limits: LimitsConfig,
    /// Optional retention rules.
    pub retention: RetentionConfig,
    /// Upstreams this relay copies events from (spec §17).
    pub mirrors: Vec<super::mirror::MirrorConfig>,
    /// Job queues.
    pub jobs: JobsConfig,
    /// A cluster of relays on one NATS JetStream log (spec §16); `None`: one relay.
    pub cluster: Option<super::cluster::ClusterConfig>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            addr: "127.0.0.1:8080".into(),
            db: "axon.db".into(),
            relay_url: "ws://127.0.0.1:8080".into(),
            admins: Vec::new(),
            allowlist: Vec::new(),
            limits: LimitsConfig::default(),
            retention: RetentionConfig::default(),
            mirrors: Vec::new(),
            jobs: JobsConfig::default(),
            cluster: None,
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// Parses a list of hex pubkeys, naming the key and index of a bad one.
fn parse_keys(key: &str, values: &[String]) -> Result<Vec<PublicKey>, ConfigError> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            parse_p_value(&value.to_ascii_lowercase()).ok_or_else(|| {
                invalid(&format!("{key}[{index}]"), format!("{value:?} is not a 64-character hex public key"))
            })
        })
        .collect()
}

impl RelayConfig {
    /// Parses YAML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RelayConfig, ConfigError> {
        let config: RelayConfig = if text.trim().is_empty() {
            RelayConfig::default()
        } else {
            serde_yaml::from_str(text)
                .map_err(|error| ConfigError::Parse { path: origin.into(), message: error.to_string() })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<RelayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        let dir = path.parent().unwrap_or(Path::new("."));
        super::mirror::config::resolve_keys(&mut config.mirrors, dir);
        Ok(config)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.socket_addr()?;
        if self.relay_url.is_empty() {
            return Err(invalid("relay_url", "must not be empty"));
        }
        if !(self.relay_url.starts_with("ws://") || self.relay_url.starts_with("wss://")) {
            return Err(invalid("relay_url", "must start with ws:// or wss://"));
        }
        if self.db.as_os_str().is_empty() {
            return Err(invalid("db", "must not be empty"));
        }
        self.admin_keys()?;
        self.allowlist_keys()?;
        self.limits.validate()?;
        if self.jobs.max_attempts == 0 {
            return Err(invalid("jobs.max_attempts", "must be at least 1"));
        }
        self.retention.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
            if !self.mirrors.is_empty() {
                return Err(invalid("mirrors", "cannot be combined with `cluster` (not supported yet)"));
            }
        }
        super::mirror::config::validate(&self.mirrors)
    }

    /// The listen address.
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.addr.parse().map_err(|_| invalid("addr", format!("{:?} is not IP:port (e.g. 127.0.0.1:8080)", self.addr)))
    }

    /// Admin keys, decoded.
    pub fn admin_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        parse_keys("admins", &self.admins)
    }

    /// Static allowlist keys, decoded.
    pub fn allowlist_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        parse_keys("allowlist", &self.allowlist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(RelayConfig::parse("", "x").ok(), Some(RelayConfig::default()));
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = RelayConfig::parse("limits:\n  max_fram_bytes: 5\n", "relay.yaml").expect_err("unknown key");
        assert!(error.to_string().contains("max_fram_bytes"), "{error}");
        let error = RelayConfig::parse("adress: x\n", "relay.yaml").expect_err("unknown key");
        assert!(error.to_string().contains("adress"), "{error}");
    }

    #[test]
    fn bad_values_are_named() {
        let error = RelayConfig::parse("limits:\n  max_limit: 0\n", "relay.yaml").expect_err("zero");
        assert!(error.to_string().contains("limits.max_limit"), "{error}");
        let error = RelayConfig::parse("admins: [\"abc\"]\n", "relay.yaml").expect_err("bad key");
        assert!(error.to_string().contains("admins[0]"), "{error}");
        let error = RelayConfig::parse("addr: nowhere\n", "relay.yaml").expect_err("bad addr");
        assert!(error.to_string().contains("addr"), "{error}");
        let error = RelayConfig::parse("limits:\n  max_tags: -1\n", "relay.yaml").expect_err("negative");
        assert!(error.to_string().contains("max_tags"), "{error}");
    }

    #[test]
    fn retention_rules() {
        let text = "retention:\n  max_events: 10\n  max_age:\n    - kinds: [1000, 1999]\n      max_age_secs: 60\n";
        let config = RelayConfig::parse(text, "x").expect("valid");
        assert_eq!(config.retention.max_events, 10);
        assert_eq!(config.retention.max_age, vec![AgeRule { kinds: [1000, 1999], max_age_secs: 60 }]);
        let error = RelayConfig::parse("retention:\n  max_age:\n    - kinds: [5, 1]\n      max_age_secs: 60\n", "x")
            .expect_err("reversed range");
        assert!(error.to_string().contains("retention.max_age[0].kinds"), "{error}");
        let error = RelayConfig::parse("retention:\n  max_evnts: 1\n", "x").expect_err("typo");
        assert!(error.to_string().contains("max_evnts"), "{error}");
    }

    #[test]
    fn mirror_key_paths_are_relative_to_relay_yaml() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.yaml");
        std::fs::write(
            &path,
            "mirrors:\n  - url: \"ws://up:1\"\n    key: \"m.key\"\n  - url: \"ws://up:2\"\n    key: \"/abs.key\"\n",
        )
        .expect("write");
        let config = RelayConfig::load(&path).expect("valid");
        assert_eq!(config.mirrors[0].key, dir.path().join("m.key"));
        assert_eq!(config.mirrors[1].key, Path::new("/abs.key"));
    }

    #[test]
    fn shipped_relay_yaml_parses_to_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.yaml");
        let config = RelayConfig::load(Path::new(path)).expect("shipped relay.yaml");
        assert_eq!(config.limits, LimitsConfig::default());
        assert_eq!(config.addr, "127.0.0.1:8080");
        assert!(config.mirrors.is_empty());
    }
}
