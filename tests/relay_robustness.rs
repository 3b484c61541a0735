//! Nothing a client sends can panic the relay or break other connections: random and
//! mutated frames over a real socket get 400s, and the relay keeps serving.

mod common;

use axon_relay::protocol::frame::{encode_publish_frame, Subscribe};
use axon_relay::protocol::{Filter, Frame};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn valid_frames() -> Vec<Vec<u8>> {
    let event = event(&alice(), 1000, "seed", vec![tag("t", "x")]);
    vec![
        encode_publish_frame(&event.encode()),
        Frame::Subscribe(Subscribe {
            sub_id: "s".into(),
            filters: vec![Filter { kinds: Some(vec![1]), ..Filter::default() }],
            after_seq: Some(1),
        })
        .encode(),
        Frame::Unsubscribe { sub_id: "s".into() }.encode(),
    ]
}

fn mutate(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    match rng.gen_range(0..4) {
        0 => {
            let cut = rng.gen_range(0..bytes.len());
            bytes.truncate(cut);
        }
        1 => {
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] = rng.gen();
            }
        }
        2 => {
            let at = rng.gen_range(0..bytes.len());
            bytes.insert(at, rng.gen());
        }
        _ => bytes = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
    }
    bytes
}

#[tokio::test]
async fn garbage_after_auth_gets_400_and_the_relay_keeps_serving() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let mut rng = StdRng::seed_from_u64(0xa7011);
    let frames = valid_frames();
    let mut errors = 0;
    for round in 0..300 {
        let original = frames[round % frames.len()].clone();
        send_raw(&mut socket, mutate(&mut rng, original)).await;
        // Every message gets at most one reply; drain what is there with a probe publish.
        let probe = event(&alice(), 1000, &format!("probe {round}"), vec![]);
        send_raw(&mut socket, encode_publish_frame(&probe.encode())).await;
        loop {
            match raw_frame(&mut socket).await {
                RawItem::Frame(Frame::Ok(ok)) if ok.id == probe.id => break,
                RawItem::Frame(Frame::Error(error)) => {
                    assert!([400, 403, 409, 410, 413].contains(&error.code), "unexpected code {}", error.code);
                    errors += 1;
                }
                RawItem::Frame(_) | RawItem::Ping => {}
                other => panic!("connection broke at round {round}: {other:?}"),
            }
        }
    }
    assert!(errors > 100, "most mutations are invalid ({errors})");
    // Another connection is unaffected, and the store is intact.
    let client = relay.connect(&bob()).await;
    let mut subscription = client
        .subscribe("probes", vec![Filter { kinds: Some(vec![1000]), limit: Some(1000), ..Filter::default() }], None)
        .await
        .expect("sub");
    let stored = subscription.stored().await.expect("stored");
    assert!(stored.iter().filter(|(event, _)| event.content.starts_with(b"probe ")).count() == 300);
}
