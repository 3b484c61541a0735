"""The resume rules of Subscription, driven frame by frame without a relay: which
SUBSCRIBE is sent after each kind of interruption, and what is skipped."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import msgpack

import axon
from axon.client import Subscription, _Connection


class FakeConn:
    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.error = None


class FakeRelay:
    """Just what Subscription uses of a Relay."""

    def __init__(self) -> None:
        self.sent: List[Dict[str, Any]] = []
        self._subs: Dict[str, Subscription] = {}
        self._closed = False
        self.reconnect_delay = (0.001, 0.002)
        self.verify_events = False
        self.conn = FakeConn()
        self._conn = self.conn
        self.counter = 0

    async def _connection(self) -> FakeConn:
        return self.conn

    def _new_sub_id(self) -> str:
        self.counter += 1
        return f"s{self.counter}"

    async def _send(self, data: bytes) -> None:
        frame = msgpack.unpackb(data, raw=False)
        self.sent.append(frame[1])

    def drop(self) -> None:
        """The connection is lost: a new one replaces it."""
        old = self.conn
        self.conn = FakeConn()
        self._conn = self.conn
        for sub in list(self._subs.values()):
            sub._on_disconnect(old, axon.ConnectionClosedError("lost"))  # type: ignore[arg-type]


KEY = axon.Key.from_seed(b"\x07" * 32)


def event_payload(sub_id: str, n: int, seq: int) -> Dict[str, Any]:
    event = axon.Event.sign(KEY, kind=1000, content=b"%d" % n, created_at=1_700_000_000 + n)
    return {"sub_id": sub_id, "event": _pairs(event.to_wire()), "seq": seq}


def _pairs(value: Any) -> Any:
    from axon.event import _Pairs

    if isinstance(value, dict):
        return _Pairs((k, _pairs(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_pairs(v) for v in value]
    return value


async def test_resume_rules() -> None:
    relay = FakeRelay()
    sub = Subscription(relay, [{"kinds": [1000]}], None, True)  # type: ignore[arg-type]
    # stored phase, newest first: seqs 5, 4
    start = asyncio.ensure_future(sub.next(1))
    await asyncio.sleep(0.01)
    assert relay.sent[-1] == {"sub_id": "s1", "filters": [{"kinds": [1000]}]}
    sub._on_event(event_payload("s1", 5, 5))
    assert (await start).seq == 5  # type: ignore[union-attr]
    sub._on_event(event_payload("s1", 4, 4))
    assert (await sub.next(1)).seq == 4  # type: ignore[union-attr]
    # dropped before EOSE: the same request again; events already yielded are skipped
    relay.drop()
    pending = asyncio.ensure_future(sub.next(1))
    await asyncio.sleep(0.05)
    assert relay.sent[-1] == {"sub_id": "s2", "filters": [{"kinds": [1000]}]}
    for n, seq in [(6, 6), (5, 5), (4, 4), (3, 3)]:
        sub._on_event(event_payload("s2", n, seq))
    assert (await pending).seq == 6  # type: ignore[union-attr]
    assert (await sub.next(1)).seq == 3  # type: ignore[union-attr]
    sub._on_eose()
    assert await sub.next(1) is axon.END_OF_STORED
    # live: 7, 8; an ephemeral event (seq 0)
    sub._on_event(event_payload("s2", 7, 7))
    sub._on_event(event_payload("s2", 100, 0))
    assert (await sub.next(1)).seq == 7  # type: ignore[union-attr]
    assert (await sub.next(1)).seq == 0  # type: ignore[union-attr]
    # dropped after EOSE: replay after the highest seq yielded
    relay.drop()
    pending = asyncio.ensure_future(sub.next(1))
    await asyncio.sleep(0.05)
    assert relay.sent[-1] == {"sub_id": "s3", "filters": [{"kinds": [1000]}], "after_seq": 7}
    assert sub.reconnects == 2
    sub._on_event(event_payload("s3", 7, 7))  # a repeat is never yielded twice
    sub._on_event(event_payload("s3", 8, 8))
    assert (await pending).seq == 8  # type: ignore[union-attr]
    sub._on_eose()  # a second EOSE is not yielded again
    # overflow with a resume point above what was yielded
    sub._on_error(axon.error_for_code(503, "overflow: slow", sub_id="s3", seq=9))
    pending = asyncio.ensure_future(sub.next(1))
    await asyncio.sleep(0.01)
    assert relay.sent[-1] == {"sub_id": "s4", "filters": [{"kinds": [1000]}], "after_seq": 9}
    assert sub.overflows == 1
    sub._on_event(event_payload("s4", 10, 10))
    assert (await pending).seq == 10  # type: ignore[union-attr]
    # a non-503 error ends the subscription even with resume=True
    sub._on_error(axon.error_for_code(400, "invalid: x", sub_id="s4"))
    try:
        await sub.next(1)
        raise AssertionError("expected InvalidError")
    except axon.InvalidError:
        pass


async def test_live_only_and_replay_requests() -> None:
    relay = FakeRelay()
    sub = Subscription(relay, [{"kinds": [1000], "limit": 0}], None, True)  # type: ignore[arg-type]
    first = asyncio.ensure_future(sub.next(1))
    await asyncio.sleep(0.01)
    sub._on_eose()
    assert await first is axon.END_OF_STORED
    relay.drop()
    pending = asyncio.ensure_future(sub.next(1))
    await asyncio.sleep(0.05)
    assert "after_seq" not in relay.sent[-1]  # live only, nothing yielded: live-only again
    pending.cancel()

    relay = FakeRelay()
    sub = Subscription(relay, [{}], 41, True)  # type: ignore[arg-type]
    first = asyncio.ensure_future(sub.next(1))
    await asyncio.sleep(0.01)
    assert relay.sent[-1]["after_seq"] == 41
    relay.drop()
    await asyncio.sleep(0.01)
    pending = asyncio.ensure_future(sub.next(1))
    await asyncio.sleep(0.05)
    assert relay.sent[-1]["after_seq"] == 41
    first.cancel()
    pending.cancel()
