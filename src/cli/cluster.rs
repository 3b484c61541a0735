//! `axon cluster status`: each node's view of the cluster log (spec §16), read from its
//! info document over HTTP.

use clap::{Args, Subcommand};

use super::CliResult;
use crate::relay::mirror::info;

/// `axon cluster ...`
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Show each node: connected to NATS, the highest log seq it applied, the highest it
    /// has seen, and how far it is behind the most advanced node.
    ///
    /// Reads each node's info document (GET / with Accept: application/json). Exits
    /// non-zero if a node cannot be read, is not a cluster node, or is not connected.
    ///
    /// Example: axon cluster status --url ws://10.0.0.1:8080,ws://10.0.0.2:8080
    Status {
        /// The nodes' WebSocket (or http://) URLs, comma-separated or repeated.
        #[arg(long, env = "AXON_URL", value_delimiter = ',', default_value = "ws://127.0.0.1:8080")]
        url: Vec<String>,
        /// Print the nodes' `cluster` objects as a JSON list instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `axon cluster`.
pub fn run(args: ClusterArgs) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.command {
        ClusterCommand::Status { url, json } => runtime.block_on(status(&url, json)),
    }
}

/// One node's `cluster` object, or why there is none.
async fn node(url: &str) -> Result<serde_json::Value, String> {
    let ws_url = match url.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}"),
        None => url.to_owned(),
    };
    let document = info::fetch_document(&ws_url).await.map_err(|error| error.to_string())?;
    document.get("cluster").cloned().ok_or_else(|| "not a cluster node (no `cluster:` in its relay.yaml)".into())
}

async fn status(urls: &[String], json: bool) -> CliResult {
    let mut nodes = Vec::with_capacity(urls.len());
    for url in urls {
        nodes.push((url.trim(), node(url.trim()).await));
    }
    let newest = nodes.iter().filter_map(|(_, node)| node.as_ref().ok()).filter_map(applied).max();
    let mut problems = 0;
    let mut listed = Vec::new();
    for (url, node) in &nodes {
        match node {
            Ok(node) => {
                let connected = node.get("nats_connected").and_then(|value| value.as_bool()) == Some(true);
                problems += usize::from(!connected);
                if json {
                    let mut node = node.clone();
                    node["url"] = serde_json::json!(url);
                    listed.push(node);
                } else {
                    println!("{}", line(url, node, newest));
                }
            }
            Err(error) => {
                problems += 1;
                if json {
                    listed.push(serde_json::json!({ "url": url, "error": error }));
                } else {
                    println!("{url} error: {error}");
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(listed));
    }
    if problems > 0 {
        return Err(format!("{problems} of {} nodes unreadable or not connected to NATS", nodes.len()).into());
    }
    Ok(())
}

fn applied(node: &serde_json::Value) -> Option<u64> {
    node.get("applied_seq").and_then(|value| value.as_u64())
}

/// One node as one line of `key=value` pairs; `behind` counts from the most advanced node.
fn line(url: &str, node: &serde_json::Value, newest: Option<u64>) -> String {
    let field = |name: &str| node.get(name).map(|value| value.to_string()).unwrap_or_else(|| "?".into());
    let behind = match (newest, applied(node)) {
        (Some(newest), Some(applied)) => newest.saturating_sub(applied).to_string(),
        _ => "?".into(),
    };
    format!(
        "{url} stream={} nats_connected={} applied_seq={} log_seq={} lag={} behind_newest_node={behind}",
        field("stream"),
        field("nats_connected"),
        field("applied_seq"),
        field("log_seq"),
        field("lag"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_line_names_every_field_and_how_far_it_is_behind() {
        let node = serde_json::json!({
            "stream": "AXON", "nats_connected": true, "applied_seq": 90, "log_seq": 100, "lag": 10
        });
        assert_eq!(
            line("ws://a", &node, Some(95)),
            "ws://a stream=\"AXON\" nats_connected=true applied_seq=90 log_seq=100 lag=10 behind_newest_node=5"
        );
    }
}
