//! Publishes pipelined on one connection are stored in the order they were sent.

mod common;

use axon_relay::protocol::frame::encode_publish_frame;
use axon_relay::protocol::Frame;
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn pipelined_publishes_get_seqs_in_send_order() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let events: Vec<_> = (0..500).map(|index| event(&alice(), 1000, &format!("{index}"), vec![])).collect();
    for event in &events {
        socket.feed(Message::Binary(encode_publish_frame(&event.encode()))).await.expect("feed");
    }
    socket.flush().await.expect("flush");
    let mut seq_by_id = std::collections::HashMap::new();
    while seq_by_id.len() < events.len() {
        match raw_frame(&mut socket).await {
            RawItem::Frame(Frame::Ok(ok)) => {
                seq_by_id.insert(ok.id, ok.seq.expect("seq"));
            }
            RawItem::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let seqs: Vec<u64> = events.iter().map(|event| seq_by_id[&event.id]).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "seqs follow send order");
}

/// What the relay must answer to one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// OK with a seq (stored kind).
    Stored,
    /// OK without a seq (ephemeral kind).
    Ephemeral,
    /// ERROR with this code.
    Error(u16),
}

/// Signatures are verified off the connection, in batches when a burst arrives: the
/// replies on one connection still come in the order of its publishes, each naming its
/// event, OK or 400 by its own signature, whether it was refused before the verifier
/// (wrong id), by it (bad signature, alone or in runs longer than a batch), or after it
/// (duplicate), and the stored ones get seqs in send order.
#[tokio::test]
async fn replies_keep_publish_order_with_batched_verification() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let mut sent: Vec<([u8; 32], Expected)> = Vec::new();
    let mut frames = Vec::new();
    let mut first_valid = None;
    for index in 0..600usize {
        let ephemeral = index % 11 == 4;
        let mut event = event(&alice(), if ephemeral { 3000 } else { 1000 }, &format!("{index}"), vec![]);
        let mut expected = if ephemeral { Expected::Ephemeral } else { Expected::Stored };
        if index % 5 == 0 || (200..300).contains(&index) {
            event.sig[40] ^= 1; // S stays below ℓ: only the signature equation fails
            expected = Expected::Error(400);
        } else if index % 13 == 6 {
            event.sig[0] ^= 1; // another R: the equation fails (or R does not decode)
            expected = Expected::Error(400);
        } else if index % 17 == 8 {
            event.content.push(b'!'); // the id no longer matches: refused before the verifier
            expected = Expected::Error(400);
        }
        if expected == Expected::Stored && first_valid.is_none() {
            first_valid = Some(event.clone());
        }
        sent.push((event.id, expected));
        frames.push(encode_publish_frame(&event.encode()));
        if index == 450 {
            let again = first_valid.clone().expect("a valid event before");
            sent.push((again.id, Expected::Error(409)));
            frames.push(encode_publish_frame(&again.encode()));
        }
    }
    for frame in frames {
        socket.feed(Message::Binary(frame)).await.expect("feed");
    }
    socket.flush().await.expect("flush");
    let mut last_seq = 0;
    for (position, (id, expected)) in sent.iter().enumerate() {
        let reply = loop {
            match raw_frame(&mut socket).await {
                RawItem::Ping => continue,
                RawItem::Frame(frame) => break frame,
                other => panic!("reply {position}: unexpected {other:?}"),
            }
        };
        match (reply, expected) {
            (Frame::Ok(ok), Expected::Stored) => {
                assert_eq!(ok.id, *id, "reply {position} names its publish");
                let seq = ok.seq.expect("a stored event's OK carries its seq");
                assert!(seq > last_seq, "reply {position}: seqs follow send order");
                last_seq = seq;
            }
            (Frame::Ok(ok), Expected::Ephemeral) => {
                assert_eq!(ok.id, *id, "reply {position} names its publish");
                assert!(ok.seq.unwrap_or(0) == 0, "no seq for an ephemeral event");
            }
            (Frame::Error(error), Expected::Error(code)) => {
                assert_eq!(error.id, Some(*id), "reply {position} names its publish");
                assert_eq!(error.code, *code, "reply {position}: {}", error.message);
            }
            (other, expected) => panic!("reply {position}: expected {expected:?}, got {other:?}"),
        }
    }
}
