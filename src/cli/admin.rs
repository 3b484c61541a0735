//! The admin commands: `axon allow`, `axon revoke` (publish a kind 9000/9001 event) and
//! `axon allowlist` (read the admin log and replay it, spec §10).

use clap::Args;
use ed25519_dalek::SigningKey;

use super::common::{parse_pubkey, publish_error_message, ConnectArgs, Output};
use super::publish::{publish_event, Published};
use super::{CliError, CliResult};
use crate::client::{Client, ClientError, SubItem};
use crate::clock::unix_now;
use crate::protocol::admin::AllowLog;
use crate::protocol::error::codes;
use crate::protocol::kind::{KIND_ALLOW, KIND_REVOKE};
use crate::protocol::tags::P;
use crate::protocol::{Event, Filter, PublicKey, Tag};

/// Arguments of `axon allow` and `axon revoke`.
#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Public keys, 64 hex characters each.
    #[arg(required = true, value_name = "PUBKEY", value_parser = parse_pubkey)]
    pub pubkeys: Vec<PublicKey>,
}

/// `axon allow` (`allow` = true) and `axon revoke`.
pub async fn admin(args: AdminArgs, allow: bool) -> CliResult {
    let key = args.connect.signing_key()?;
    let mut keys: Vec<PublicKey> = Vec::new();
    for pubkey in args.pubkeys {
        if !keys.contains(&pubkey) {
            keys.push(pubkey);
        }
    }
    let (kind, verb) = if allow { (KIND_ALLOW, "allowed") } else { (KIND_REVOKE, "revoked") };
    let tags = keys.iter().map(|pubkey| Tag::new(P, [hex::encode(pubkey)])).collect();
    let event = Event::sign(&key, unix_now(), kind, Vec::new(), tags)
        .map_err(|error| format!("cannot build the admin event: {}", error.message()))?;
    let client = args.connect.connect(&key).await?;
    let seq = match publish_event(&client, &event).await {
        Ok(Published::New(seq) | Published::Duplicate(seq)) => seq,
        Err(ClientError::Rejected { code: codes::RESTRICTED, message, .. }) => {
            return Err(format!(
                "this key ({}) is not an admin: only keys listed under `admins` in relay.yaml can allow or revoke \
                 keys (403: {message})",
                hex::encode(key.verifying_key().to_bytes())
            )
            .into())
        }
        Err(ClientError::Rejected { code: codes::DUPLICATE, message, .. }) => {
            return Err(format!(
                "nothing {verb}: {message} (keys in relay.yaml are always allowed; remove them from relay.yaml \
                 and send the relay SIGHUP instead)"
            )
            .into())
        }
        Err(ClientError::Rejected { code, message, .. }) => {
            return Err(format!("nothing {verb}: {}", publish_error_message(code, &message)).into())
        }
        Err(ClientError::Closed) => return Err("the relay closed the connection before answering".into()),
        Err(error) => return Err(error.to_string().into()),
    };
    eprintln!(
        "admin event {} stored at seq {}",
        hex::encode(event.id),
        seq.map_or_else(|| "?".to_owned(), |seq| seq.to_string())
    );
    let mut out = Output::new(false);
    for pubkey in &keys {
        if let Err(error) = out.line(&format!("{verb} {}", hex::encode(pubkey))) {
            return error.into_result();
        }
    }
    if let Err(error) = out.flush() {
        return error.into_result();
    }
    Ok(())
}

/// Arguments of `axon allowlist`.
#[derive(Args)]
pub struct AllowlistArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the admin log instead: one line per ALLOW/REVOKE event, oldest first:
    /// seq, created_at, allow|revoke, the admin's key, the keys named (comma-separated).
    #[arg(long)]
    pub log: bool,
}

/// One entry of the admin log.
struct AdminEntry {
    seq: u64,
    event: Event,
}

/// Reads the whole admin log (kinds 9000–9001), in seq order.
async fn admin_log(client: &Client) -> Result<Vec<AdminEntry>, CliError> {
    let filter = Filter { kinds: Some(vec![KIND_ALLOW, KIND_REVOKE]), ..Filter::default() };
    let mut subscription = client
        .subscribe("admin-log", vec![filter], Some(0))
        .await
        .map_err(|_| CliError::from("the relay closed the connection before answering"))?;
    let mut entries = Vec::new();
    loop {
        let item = tokio::time::timeout(super::common::REPLY_TIMEOUT, subscription.next())
            .await
            .map_err(|_| format!("the relay sent no EOSE within {} s", super::common::REPLY_TIMEOUT.as_secs()))?;
        match item {
            Some(SubItem::Event { event, seq, .. }) => entries.push(AdminEntry { seq, event: *event }),
            Some(SubItem::Eose) => break,
            Some(SubItem::Ended(error)) => {
                return Err(format!("the relay ended the query: {} {}", error.code, error.message).into())
            }
            None => return Err("the relay closed the connection before the end of the admin log".into()),
        }
    }
    entries.sort_by_key(|entry| entry.seq);
    Ok(entries)
}

/// Replays the log ([`AllowLog`], as the relay does). Returns the keys still allowed, in
/// the order they were allowed (by seq, then by position in the event).
fn effective_allowlist(entries: &[AdminEntry]) -> Vec<PublicKey> {
    let mut log = AllowLog::default();
    for (event, error) in log.replay(entries.iter().map(|entry| &entry.event)) {
        eprintln!("note: admin event {} skipped: {error}", hex::encode(event.id));
    }
    log.keys()
}

/// `axon allowlist`.
pub async fn allowlist(args: AllowlistArgs) -> CliResult {
    let key: SigningKey = args.connect.signing_key()?;
    let client = args.connect.connect(&key).await?;
    let entries = admin_log(&client).await?;
    if entries.is_empty() {
        eprintln!(
            "note: the admin log is empty, or this key is not an admin (admin events are visible only to admins); \
             keys allowed in relay.yaml are never listed"
        );
    }
    let mut out = Output::new(false);
    let lines: Vec<String> = if args.log {
        entries
            .iter()
            .map(|entry| {
                let action = if entry.event.kind == KIND_ALLOW { "allow" } else { "revoke" };
                let keys: Vec<&str> = entry.event.tag_values(P).collect();
                format!(
                    "{}\t{}\t{action}\t{}\t{}",
                    entry.seq,
                    entry.event.created_at,
                    hex::encode(entry.event.pubkey),
                    keys.join(",")
                )
            })
            .collect()
    } else {
        effective_allowlist(&entries).iter().map(hex::encode).collect()
    };
    for line in lines {
        if let Err(error) = out.line(&line) {
            return error.into_result();
        }
    }
    if let Err(error) = out.flush() {
        return error.into_result();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin_event(kind: u16, keys: &[[u8; 32]]) -> Event {
        let key = SigningKey::from_bytes(&[7; 32]);
        let tags = keys.iter().map(|pubkey| Tag::new(P, [hex::encode(pubkey)])).collect();
        Event::sign(&key, 1, kind, Vec::new(), tags).expect("sign")
    }

    #[test]
    fn allowlist_replays_allow_and_revoke_in_seq_order() {
        let (a, b, c) = ([1; 32], [2; 32], [3; 32]);
        let entries = vec![
            AdminEntry { seq: 1, event: admin_event(KIND_ALLOW, &[b, a]) },
            AdminEntry { seq: 4, event: admin_event(KIND_REVOKE, &[b]) },
            AdminEntry { seq: 7, event: admin_event(KIND_ALLOW, &[c, a]) },
            AdminEntry { seq: 9, event: admin_event(KIND_ALLOW, &[b]) },
        ];
        assert_eq!(effective_allowlist(&entries), vec![a, c, b]);
        let entries = vec![AdminEntry { seq: 1, event: admin_event(KIND_ALLOW, &[c, a, b]) }];
        assert_eq!(effective_allowlist(&entries), vec![c, a, b]);
    }
}
