//! Frame encoding and decoding: round trips, strictness, and no panics on any input.

use axon_relay::protocol::frame::{encode_event_frame, Auth, ErrorMessage, EventMessage, OkMessage, Subscribe};
use axon_relay::protocol::{ErrorCode, Event, Filter, Frame, RawEvent, Tag, TagFilter};
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn sample_event() -> Event {
    Event::sign(&key(), 1_700_000_000, 1000, b"hi".to_vec(), vec![Tag::new("t", ["x"])]).expect("sign")
}

fn decode_error(bytes: &[u8]) -> ErrorCode {
    Frame::decode_slice(bytes).expect_err("must not decode").code
}

#[test]
fn event_frame_is_built_around_raw_bytes() {
    let raw = sample_event().encode();
    let frame = encode_event_frame("s1", 42, &raw);
    let expected =
        Frame::Event(EventMessage { sub_id: "s1".into(), event: RawEvent(Bytes::from(raw.clone())), seq: 42 });
    assert_eq!(frame, expected.encode());
    match Frame::decode_slice(&frame).expect("decode") {
        Frame::Event(message) => {
            assert_eq!(message.event.as_bytes(), &raw[..]);
            assert_eq!(message.event.decode().expect("event"), sample_event());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn payloads_ignore_unknown_keys_but_filters_do_not() {
    // [3, {"sub_id": "a", "extra": [1, 2]}]
    let lenient = [
        0x92, 0x03, 0x82, 0xa6, b's', b'u', b'b', b'_', b'i', b'd', 0xa1, b'a', 0xa5, b'e', b'x', b't', b'r', b'a',
        0x92, 1, 2,
    ];
    assert_eq!(Frame::decode_slice(&lenient).expect("lenient"), Frame::Unsubscribe { sub_id: "a".into() });
    // [2, {"sub_id": "a", "filters": [{"kind": [1]}]}] — a mistyped filter key
    let mut strict = vec![0x92, 0x02, 0x82, 0xa6];
    strict.extend_from_slice(b"sub_id");
    strict.extend_from_slice(&[0xa1, b'a', 0xa7]);
    strict.extend_from_slice(b"filters");
    strict.extend_from_slice(&[0x91, 0x81, 0xa4]);
    strict.extend_from_slice(b"kind");
    strict.extend_from_slice(&[0x91, 0x01]);
    assert_eq!(decode_error(&strict), ErrorCode::Invalid);
}

#[test]
fn malformed_frames_are_400() {
    for bad in [
        &[][..],
        &[0x91, 0x01][..],                                                       // one element
        &[0x93, 0x01, 0x80, 0x80][..],                                           // three elements
        &[0x92, 0x63, 0x80][..],                                                 // unknown type 99
        &[0x92, 0x01, 0x90][..],                                                 // payload not a map
        &[0x92, 0x03, 0x80][..],                                                 // missing sub_id
        &[0x92, 0x03, 0x81, 0xa6, b's', b'u', b'b', b'_', b'i', b'd', 0xa0][..], // empty sub_id
        &[0x92, 0x0c, 0x81, 0xa6, b's', b'u', b'b', b'_', b'i', b'd', 0xa1, b'a', 0x00][..], // trailing byte
        &[0xc1][..],
    ] {
        assert_eq!(decode_error(bad), ErrorCode::Invalid, "{bad:02x?}");
    }
}

#[test]
fn best_effort_id_survives_a_malformed_event() {
    let event = sample_event();
    let mut raw = event.encode();
    let len = raw.len();
    raw[len - 1] = 0xc1; // corrupt the tags
    let raw_event = RawEvent(Bytes::from(raw));
    assert!(raw_event.decode().is_err());
    assert_eq!(raw_event.best_effort_id(), Some(event.id));
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn arb_text() -> impl Strategy<Value = String> {
    "[a-z0-9é🚀]{1,12}"
}

fn arb_tag() -> impl Strategy<Value = Tag> {
    (arb_text(), proptest::collection::vec(".{0,8}", 0..4)).prop_map(|(name, values)| Tag { name, values })
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        0u64..(1 << 63),
        any::<u16>(),
        arb_bytes(64),
        proptest::collection::vec(any::<u8>(), 64),
        proptest::collection::vec(arb_tag(), 0..5),
    )
        .prop_map(|(id, pubkey, created_at, kind, content, sig, tags)| Event {
            id,
            pubkey,
            created_at,
            kind,
            content,
            sig: sig.try_into().unwrap_or([0; 64]),
            tags,
        })
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    let prefixes = proptest::option::of(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..33), 0..3));
    (
        prefixes.clone(),
        prefixes,
        proptest::option::of(proptest::collection::vec(any::<u16>(), 0..3)),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(proptest::collection::vec(
            (arb_text(), proptest::collection::vec(arb_text(), 1..3))
                .prop_map(|(name, values)| TagFilter { name, values }),
            0..3,
        )),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(ids, authors, kinds, since, until, tags, limit)| Filter {
            ids,
            authors,
            kinds,
            since,
            until,
            tags,
            limit,
        })
}

fn arb_sub_id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:_-]{1,64}"
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<[u8; 32]>(), proptest::collection::vec(any::<u8>(), 64))
            .prop_map(|(pubkey, sig)| Frame::Auth(Auth { pubkey, sig: sig.try_into().unwrap_or([0; 64]) })),
        (arb_sub_id(), proptest::collection::vec(arb_filter(), 0..4), proptest::option::of(any::<u64>()))
            .prop_map(|(sub_id, filters, after_seq)| Frame::Subscribe(Subscribe { sub_id, filters, after_seq })),
        arb_sub_id().prop_map(|sub_id| Frame::Unsubscribe { sub_id }),
        arb_event().prop_map(|event| Frame::Publish { event: RawEvent::encode(&event) }),
        any::<[u8; 32]>().prop_map(|nonce| Frame::Challenge { nonce }),
        (arb_sub_id(), arb_event(), any::<u64>()).prop_map(|(sub_id, event, seq)| Frame::Event(EventMessage {
            sub_id,
            event: RawEvent::encode(&event),
            seq
        })),
        arb_sub_id().prop_map(|sub_id| Frame::Eose { sub_id }),
        (any::<[u8; 32]>(), proptest::option::of(any::<u64>())).prop_map(|(id, seq)| Frame::Ok(OkMessage { id, seq })),
        (
            any::<u16>(),
            ".{0,20}",
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(arb_sub_id()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(code, message, id, sub_id, seq, retry_after_ms)| Frame::Error(ErrorMessage {
                code,
                message,
                id,
                sub_id,
                seq,
                retry_after_ms
            })),
    ]
}

/// Any MessagePack value (nested arrays and maps, every scalar family, ext), as bytes:
/// well-formed MessagePack reaches far deeper into the decoder than random bytes, which
/// mostly fail at the first marker. (A `cargo fuzz` target needs a nightly toolchain; this
/// property test stands in for it on stable.)
fn arb_msgpack() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(vec![0xc0]),
        Just(vec![0xc2]),
        Just(vec![0xc3]),
        any::<u64>().prop_map(|value| {
            let mut out = Vec::new();
            let _ = rmp::encode::write_uint(&mut out, value);
            out
        }),
        any::<i64>().prop_map(|value| {
            let mut out = Vec::new();
            let _ = rmp::encode::write_sint(&mut out, value);
            out
        }),
        prop::sample::select(vec![
            "sub_id",
            "filters",
            "after_seq",
            "event",
            "pubkey",
            "sig",
            "id",
            "seq",
            "authors",
            "kinds",
            "tags",
            "name",
            "values",
            "limit",
            "since",
            "until",
            "ids",
            "x"
        ])
        .prop_map(|key| {
            let mut out = Vec::new();
            let _ = rmp::encode::write_str(&mut out, key);
            out
        }),
        ".{0,40}".prop_map(|text| {
            let mut out = Vec::new();
            let _ = rmp::encode::write_str(&mut out, &text);
            out
        }),
        prop::collection::vec(any::<u8>(), 0..70).prop_map(|bytes| {
            let mut out = Vec::new();
            let _ = rmp::encode::write_bin(&mut out, &bytes);
            out
        }),
        (any::<i8>(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(kind, data)| {
            let mut out = Vec::new();
            let _ = rmp::encode::write_ext_meta(&mut out, data.len() as u32, kind);
            out.extend(data);
            out
        }),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(|items| {
                let mut out = Vec::new();
                let _ = rmp::encode::write_array_len(&mut out, items.len() as u32);
                items.into_iter().for_each(|item| out.extend(item));
                out
            }),
            prop::collection::vec((inner.clone(), inner), 0..6).prop_map(|entries| {
                let mut out = Vec::new();
                let _ = rmp::encode::write_map_len(&mut out, entries.len() as u32);
                for (key, value) in entries {
                    out.extend(key);
                    out.extend(value);
                }
                out
            }),
        ]
    })
}

/// `[type, payload]` with any type number (known ones more often) and any payload value.
fn arb_framed_msgpack() -> impl Strategy<Value = Vec<u8>> {
    (prop_oneof![0u64..16, any::<u64>()], arb_msgpack()).prop_map(|(frame_type, payload)| {
        let mut out = vec![0x92];
        let _ = rmp::encode::write_uint(&mut out, frame_type);
        out.extend(payload);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, .. ProptestConfig::default() })]

    /// Whatever well-formed MessagePack arrives, the decoder returns a frame or a 400,
    /// never panics, and what it accepts it re-encodes to something that decodes the same.
    #[test]
    fn structured_msgpack_decodes_or_is_400(bytes in arb_framed_msgpack()) {
        match Frame::decode_slice(&bytes) {
            Ok(frame) => prop_assert_eq!(Frame::decode_slice(&frame.encode()), Ok(frame)),
            Err(error) => prop_assert_eq!(error.code, ErrorCode::Invalid),
        }
    }

    /// Random bytes, too, decode only to frames that survive a re-encoding.
    #[test]
    fn accepted_bytes_re_encode_to_the_same_frame(bytes in arb_bytes(256)) {
        if let Ok(frame) = Frame::decode_slice(&bytes) {
            prop_assert_eq!(Frame::decode_slice(&frame.encode()), Ok(frame));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn every_frame_round_trips(frame in arb_frame()) {
        let bytes = frame.encode();
        prop_assert_eq!(Frame::decode_slice(&bytes), Ok(frame.clone()));
        if let Frame::Publish { event } | Frame::Event(EventMessage { event, .. }) = &frame {
            let decoded = event.decode();
            prop_assert!(decoded.is_ok());
            prop_assert_eq!(RawEvent::encode(&decoded.unwrap_or_else(|_| unreachable!())), event.clone());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in arb_bytes(512)) {
        let _ = Frame::decode_slice(&bytes);
        let _ = Event::decode(&bytes);
        let _ = RawEvent(Bytes::from(bytes)).best_effort_id();
    }

    #[test]
    fn mutated_frames_never_panic(frame in arb_frame(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut bytes = frame.encode();
        for (index, byte) in edits {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        let _ = Frame::decode_slice(&bytes);
        let at = cut.index(bytes.len() + 1);
        if let Ok(Frame::Publish { event }) = Frame::decode_slice(&bytes[..at]) {
            let _ = event.decode();
        }
    }

    #[test]
    fn id_never_depends_on_wire_tag_order(tags in proptest::collection::vec(arb_tag(), 0..8), seed in any::<u64>()) {
        let key = key();
        let mut shuffled = tags.clone();
        // A deterministic shuffle driven by `seed`.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let original = Event::sign(&key, 1, 1000, vec![], tags);
        let reordered = Event::sign(&key, 1, 1000, vec![], shuffled);
        match (original, reordered) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a.id, b.id),
            (Err(a), Err(b)) => prop_assert_eq!(a.code, b.code),
            (a, b) => prop_assert!(false, "disagree: {:?} vs {:?}", a, b),
        }
    }
}
