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
