//! Direct-message interoperability with the JavaScript client (`clients/js`, spec §12):
//! the Rust side opens a DM sealed by JavaScript, and the DM sealed here (committed as
//! `clients/js/test/fixtures/dm-from-rust.json`, opened by the JavaScript tests) is
//! checked to open. `AXON_WRITE_DM_FIXTURE=1 cargo test --test dm_js_interop` rewrites it.

use std::path::PathBuf;

use axon_relay::protocol::dm;
use ed25519_dalek::SigningKey;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/js/test/fixtures").join(name)
}

fn field(doc: &serde_json::Value, name: &str) -> Vec<u8> {
    hex::decode(doc[name].as_str().unwrap_or_else(|| panic!("fixture field {name}"))).expect("hex")
}

fn key(doc: &serde_json::Value, name: &str) -> SigningKey {
    SigningKey::from_bytes(&field(doc, name).try_into().expect("32-byte seed"))
}

fn open_fixture(doc: &serde_json::Value) {
    let (sender, recipient) = (key(doc, "sender_seed"), key(doc, "recipient_seed"));
    let (sender_pub, recipient_pub) = (sender.verifying_key().to_bytes(), recipient.verifying_key().to_bytes());
    assert_eq!(hex::encode(sender_pub), doc["sender_pubkey"].as_str().expect("sender_pubkey"));
    let content = field(doc, "content_hex");
    let plaintext = field(doc, "plaintext_hex");
    assert_eq!(dm::open(&recipient, &sender_pub, &recipient_pub, &content), Ok(plaintext.clone()));
    assert_eq!(dm::open(&sender, &sender_pub, &recipient_pub, &content), Ok(plaintext));
}

#[test]
fn rust_opens_a_dm_sealed_by_javascript() {
    let text = std::fs::read_to_string(fixture("dm-from-js.json")).expect("clients/js/test/fixtures/dm-from-js.json");
    open_fixture(&serde_json::from_str(&text).expect("json"));
}

#[test]
fn the_rust_sealed_fixture_opens() {
    let path = fixture("dm-from-rust.json");
    if std::env::var_os("AXON_WRITE_DM_FIXTURE").is_some() {
        let (sender, recipient) = (SigningKey::from_bytes(&[0x33; 32]), SigningKey::from_bytes(&[0x44; 32]));
        let plaintext = "sealed by the Rust implementation \u{2713}".as_bytes();
        let recipient_pub = recipient.verifying_key().to_bytes();
        let content = dm::seal(&sender, &recipient_pub, plaintext).expect("seal");
        let doc = serde_json::json!({
            "description": "A §12 DM sealed by src/protocol/dm.rs (dm::seal); clients/js opens it with openDm.",
            "sender_seed": hex::encode(sender.to_bytes()),
            "sender_pubkey": hex::encode(sender.verifying_key().to_bytes()),
            "recipient_seed": hex::encode(recipient.to_bytes()),
            "recipient_pubkey": hex::encode(recipient_pub),
            "plaintext_hex": hex::encode(plaintext),
            "content_hex": hex::encode(content),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json") + "\n").expect("write fixture");
    }
    let text = std::fs::read_to_string(&path).expect("clients/js/test/fixtures/dm-from-rust.json");
    open_fixture(&serde_json::from_str(&text).expect("json"));
}
