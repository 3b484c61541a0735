//! The `cluster:` section of relay.yaml (spec §16).

use std::time::Duration;

use serde::Deserialize;

use crate::relay::config::ConfigError;

/// JetStream's window for deduplicating publishes by message id (the event id). Two
/// copies of one event published within it get one seq; a later copy is refused by the
/// relay's own id check before it is published, and by the applier if it still gets in.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Where the cluster's log lives: the NATS servers, the JetStream stream and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// One or more NATS server URLs, comma-separated.
    pub nats_url: String,
    /// The JetStream stream holding the event log.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Stream replicas (3 in production; at most 5, JetStream's limit).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

fn default_stream() -> String {
    "AXON".into()
}

fn default_replicas() -> usize {
    1
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: format!("cluster.{key}"), reason: reason.into() }
}

impl ClusterConfig {
    /// Checks every value, naming the key of a bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.servers()?;
        let stream_ok = !self.stream.is_empty()
            && self.stream.len() <= 64
            && self.stream.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if !stream_ok {
            return Err(invalid("stream", "must be 1–64 characters of A–Z, a–z, 0–9, '_' or '-'"));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(invalid("replicas", "must be between 1 and 5"));
        }
        Ok(())
    }

    /// The NATS servers, parsed.
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, ConfigError> {
        let servers: Vec<async_nats::ServerAddr> = self
            .nats_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| url.parse().map_err(|error| invalid("nats_url", format!("{url:?}: {error}"))))
            .collect::<Result<_, _>>()?;
        if servers.is_empty() {
            return Err(invalid("nats_url", "must name at least one NATS server"));
        }
        Ok(servers)
    }

    /// The subject events are published on.
    pub fn subject(&self) -> String {
        format!("{}.events", self.stream)
    }

    /// Every subject the stream holds: events, job records, group records.
    pub fn subjects(&self) -> Vec<String> {
        vec![self.subject(), format!("{}.jobs.>", self.stream), format!("{}.groups.>", self.stream)]
    }

    /// The subject of job `job_seq`'s records in `group` (the group's name in hex, since
    /// a name may hold any byte a subject may not).
    pub fn job_subject(&self, group: &str, job_seq: u64) -> String {
        format!("{}.jobs.{}.{job_seq}", self.stream, hex::encode(group))
    }

    /// The subject of group `name`'s creation record.
    pub fn group_subject(&self, name: &str) -> String {
        format!("{}.groups.{}", self.stream, hex::encode(name))
    }

    /// The name under which the local index stores how far it applied the log.
    pub fn cursor_name(&self) -> String {
        format!("nats-jetstream:{}", self.stream)
    }
}

#[cfg(test)]
mod tests {
    use crate::relay::config::RelayConfig;

    #[test]
    fn cluster_section_parses_with_defaults_and_names_bad_keys() {
        let config = RelayConfig::parse("cluster:\n  nats_url: \"nats://127.0.0.1:4222, nats://10.0.0.2:4222\"\n", "x")
            .expect("valid");
        let cluster = config.cluster.expect("cluster");
        assert_eq!((cluster.stream.as_str(), cluster.replicas), ("AXON", 1));
        assert_eq!(cluster.servers().expect("servers").len(), 2);
        let error = RelayConfig::parse("cluster:\n  nats_url: \"nats://a:1\"\n  replica: 3\n", "x").expect_err("typo");
        assert!(error.to_string().contains("replica"), "{error}");
        let error = RelayConfig::parse("cluster:\n  nats_url: \"nats://a:1\"\n  replicas: 7\n", "x").expect_err("7");
        assert!(error.to_string().contains("cluster.replicas"), "{error}");
        let error =
            RelayConfig::parse("cluster:\n  nats_url: \"nats://a:1\"\n  stream: \"A.B\"\n", "x").expect_err("dot");
        assert!(error.to_string().contains("cluster.stream"), "{error}");
        let error = RelayConfig::parse("cluster:\n  nats_url: \" , \"\n", "x").expect_err("empty");
        assert!(error.to_string().contains("cluster.nats_url"), "{error}");
    }
}
