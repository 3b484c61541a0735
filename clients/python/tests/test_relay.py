"""Integration tests against the real relay binary (see conftest.py)."""

from __future__ import annotations

import asyncio
import time
from typing import List, Union

import pytest

import axon
from conftest import RelayProcess


async def collect_until_eose(sub: axon.Subscription) -> List[axon.Event]:
    events: List[axon.Event] = []
    while True:
        item = await sub.next(timeout=10)
        if item is axon.END_OF_STORED:
            return events
        assert isinstance(item, axon.Event)
        events.append(item)


# -- authentication ------------------------------------------------------------------


async def test_auth_success_reads_relay_url_from_info(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        assert conn.connected
        assert conn.relay_url == relay.relay_url  # from GET /info, differs from the address
        assert conn.limits.max_content_bytes == 65536
        result = await conn.publish(kind=1000, content=b"hi", tags=[("topic", "hello")])
        assert isinstance(result.id, bytes) and len(result.id) == 32 and result.seq >= 1


async def test_auth_401_wrong_relay_url(relay: RelayProcess, user_key: axon.Key) -> None:
    with pytest.raises(axon.AuthError) as caught:
        async with axon.connect(relay.url, user_key, relay_url=relay.url):
            pass
    assert caught.value.code == 401
    assert "relay_url" in str(caught.value)


async def test_auth_403_key_not_allowed(relay: RelayProcess) -> None:
    stranger = axon.Key.generate()
    with pytest.raises(axon.ForbiddenError) as caught:
        await axon.connect(relay.url, stranger)
    assert caught.value.code == 403
    assert stranger.public_hex in str(caught.value)


async def test_connect_refused_is_a_clear_error(user_key: axon.Key) -> None:
    with pytest.raises(axon.ConnectionClosedError) as caught:
        await axon.connect("ws://127.0.0.1:1", user_key, timeout=3)
    assert "is the relay running" in str(caught.value)


# -- publish and query ---------------------------------------------------------------


async def test_publish_query_every_filter_field(relay: RelayProcess, user_key: axon.Key) -> None:
    other = axon.Key.generate()
    async with axon.connect(relay.url, user_key) as conn:
        a = await conn.publish(kind=1000, content=b"a", tags=[("topic", "x")], created_at=1_700_000_100)
        b = await conn.publish(kind=1001, content=b"b", tags=[("topic", "y"), ("t",)], created_at=1_700_000_200)
        c = await conn.publish(kind=1000, content=b"\x00\xff", tags=[("topic", "y")], created_at=1_700_000_300)
        # an event signed by another (allowed) author: publish it pre-signed
        d_event = axon.Event.sign(user_key, kind=4000, content=b"d", created_at=1_700_000_400)
        d = await conn.publish_event(d_event)
        assert a.seq < b.seq < c.seq < d.seq

        everything = await conn.query([{}])
        assert [e.id for e in everything] == [d.id, c.id, b.id, a.id]  # newest first
        stored = everything[1]
        assert stored.content == b"\x00\xff" and stored.tags == (("topic", "y"),) and stored.seq == c.seq
        assert stored.pubkey == user_key.public_key and stored.verify()

        async def ids(*filters: dict, after_seq: Union[int, None] = None) -> List[bytes]:
            return [e.id for e in await conn.query(list(filters), after_seq=after_seq)]

        assert await ids({"ids": [a.id_hex[:8]]}) == [a.id]
        assert await ids({"ids": [b.id]}) == [b.id]
        assert await ids({"authors": [user_key.public_hex[:4]]}) == [d.id, c.id, b.id, a.id]
        assert await ids({"authors": [other.public_key]}) == []
        assert await ids({"kinds": [1000]}) == [c.id, a.id]
        assert await ids({"since": 1_700_000_200}) == [d.id, c.id, b.id]
        assert await ids({"until": 1_700_000_200}) == [b.id, a.id]
        assert await ids({"tags": {"topic": ["y"]}}) == [c.id, b.id]
        assert await ids({"tags": {"topic": ["x", "y"]}, "kinds": [1000]}) == [c.id, a.id]
        assert await ids({"limit": 2}) == [d.id, c.id]
        assert await ids({"kinds": [1001]}, {"ids": [a.id]}) == [b.id, a.id]
        assert await ids({}, after_seq=b.seq) == [c.id, d.id]  # replay: oldest first
        assert await ids({"limit": 0}) == []


async def test_duplicate_is_success_with_flag(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        event = conn.sign(1000, b"once")
        first = await conn.publish_event(event)
        again = await conn.publish_event(event)
        assert not first.duplicate and again.duplicate
        assert again.id == first.id and again.seq == first.seq


async def test_pipelined_publishes(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        results = await asyncio.gather(*(conn.publish(1000, f"n{i}".encode()) for i in range(300)))
        seqs = [r.seq for r in results]
        assert len(set(seqs)) == 300 and all(s > 0 for s in seqs)


async def test_expired_and_expires_in(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        ok = await conn.publish(1000, b"soon", expires_in=3600)
        stored = await conn.query([{"ids": [ok.id]}])
        assert stored[0].expires_at is not None and stored[0].expires_at > time.time()
        with pytest.raises(axon.ExpiredError) as caught:
            await conn.publish(1000, b"late", tags=[("expires_at", "1")])
        assert caught.value.code == 410


# -- live delivery -------------------------------------------------------------------


async def test_live_delivery_and_ephemeral(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as sub_conn, axon.connect(relay.url, user_key) as pub_conn:
        old = await pub_conn.publish(1000, b"stored", tags=[("topic", "live")])
        sub = sub_conn.subscribe([{"tags": {"topic": ["live"]}}, {"kinds": [3000]}])
        assert [e.id for e in await collect_until_eose(sub)] == [old.id]
        new = await pub_conn.publish(1000, b"live one", tags=[("topic", "live")])
        progress = await pub_conn.publish(3000, b"50%", tags=[("topic", "job")])
        assert progress.seq == 0  # ephemeral: not stored
        first = await sub.next(timeout=5)
        second = await sub.next(timeout=5)
        assert isinstance(first, axon.Event) and first.id == new.id and first.seq == new.seq
        assert isinstance(second, axon.Event) and second.id == progress.id and second.seq == 0
        await sub.close()


async def test_verify_events_and_explicit_relay_url(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key, relay_url=relay.relay_url, verify_events=True) as conn:
        sent = await conn.publish(1000, b"checked on receipt", tags=[("topic", "v")])
        [event] = await conn.query({"tags": {"topic": ["v"]}})
        assert event.id == sent.id and event.seq == sent.seq


async def test_async_for_with_break(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        await conn.publish(1000, b"x")
        seen = []
        async for item in conn.subscribe([{"kinds": [1000]}], after_seq=0):
            seen.append(item)
            if item is axon.END_OF_STORED:
                break
        assert len(seen) == 2 and seen[-1] is axon.END_OF_STORED
        assert len(await conn.query([{"kinds": [1000]}])) == 1  # the connection is still usable


# -- resume ---------------------------------------------------------------------------


async def consume(sub: axon.Subscription, want: int, into: List[axon.Event], timeout: float) -> None:
    async def run() -> None:
        while len(into) < want:
            item = await sub.next()
            if isinstance(item, axon.Event):
                into.append(item)

    await asyncio.wait_for(run(), timeout)


def assert_no_gap_no_duplicate(received: List[axon.Event], published: List[axon.PublishResult]) -> None:
    seqs = [e.seq for e in received]
    assert seqs == sorted(seqs), "delivered out of seq order"
    assert len(seqs) == len(set(seqs)), "duplicate delivery"
    assert sorted(seqs) == sorted(r.seq for r in published), "gap: an event was missed"


async def test_resume_across_relay_restart(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key, reconnect_delay=(0.1, 1.0)) as sub_conn:
        async with axon.connect(relay.url, user_key) as pub_conn:
            sub = sub_conn.subscribe([{"kinds": [1000]}], resume=True)
            assert await collect_until_eose(sub) == []
            published = [await pub_conn.publish(1000, f"before {i}".encode()) for i in range(20)]
            received: List[axon.Event] = []
            await consume(sub, 10, received, 10)
            relay.restart()  # same port, same database
            # Publish while the subscriber is away (it resumes only when next() is called).
            # The first publish may still go to the old connection, whose close the client
            # has not read yet (restart() blocked the loop): it fails with
            # ConnectionClosedError, and publishing again is safe (a copy would get 409).
            for i in range(20):
                for _ in range(3):
                    try:
                        published.append(await pub_conn.publish(1000, f"after {i}".encode()))
                        break
                    except axon.ConnectionClosedError:
                        continue
            await consume(sub, 40, received, 20)
            assert sub.reconnects >= 1
            assert_no_gap_no_duplicate(received, published)
            await sub.close()


async def test_resume_across_forced_overflow(start_relay, user_key: axon.Key) -> None:  # type: ignore[no-untyped-def]
    relay = start_relay(allow=[user_key], outbound_queue=2)
    async with axon.connect(relay.url, user_key) as sub_conn, axon.connect(relay.url, user_key) as pub_conn:
        sub = sub_conn.subscribe([{"kinds": [1000]}], resume=True)
        assert await collect_until_eose(sub) == []
        published: List[axon.PublishResult] = []
        # Stop reading the subscriber's socket while 6 MB of events go out: the kernel's
        # buffers fill, the relay's outbound queue (2 frames) fills, and the relay must
        # end the subscription with ERROR 503 overflow and a resume point.
        assert sub_conn._conn is not None
        transport = sub_conn._conn.ws.transport
        transport.pause_reading()
        padding = b"." * 4000
        for round_ in range(4):
            published += await asyncio.gather(
                *(pub_conn.publish(1000, b"burst %d/%d " % (round_, i) + padding) for i in range(400))
            )
        transport.resume_reading()
        assert not any(r.duplicate for r in published)
        received: List[axon.Event] = []
        await consume(sub, len(published), received, 30)
        assert sub.overflows >= 1, "the relay never overflowed the subscription"
        assert_no_gap_no_duplicate(received, published)
        with pytest.raises(asyncio.TimeoutError):
            await sub.next(timeout=0.3)  # nothing further (no duplicate after the last one)
        await sub.close()


async def test_subscription_without_resume_raises_on_disconnect(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        sub = conn.subscribe([{"kinds": [1000]}], resume=False)
        await collect_until_eose(sub)
        relay.kill()
        with pytest.raises(axon.ConnectionClosedError):
            await sub.next(timeout=10)


async def test_pending_publishes_fail_when_the_connection_drops(relay: RelayProcess, user_key: axon.Key) -> None:
    import signal

    async with axon.connect(relay.url, user_key) as conn:
        await conn.publish(1000, b"warm-up")
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGSTOP)  # the relay stops answering: publishes stay pending
        tasks = [asyncio.ensure_future(conn.publish(1000, b"p %d" % i, retries=0)) for i in range(200)]
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in tasks)
        relay.kill()  # SIGKILL: the connection drops
        done, pending = await asyncio.wait(tasks, timeout=15)
        assert not pending, "a publish hung after the connection dropped"
        failures = [t.exception() for t in done]
        assert all(isinstance(f, axon.ConnectionClosedError) for f in failures), failures[:3]
        assert "closed the connection" in str(failures[0])


# -- rate limits (spec §15) ------------------------------------------------------------


async def test_429_carries_retry_after_ms(start_relay, user_key: axon.Key) -> None:  # type: ignore[no-untyped-def]
    relay = start_relay(allow=[user_key], publish_per_second=2, publish_burst=1)
    async with axon.connect(relay.url, user_key) as conn:
        await conn.publish(1000, b"first", retries=0)
        with pytest.raises(axon.RateLimitedError) as caught:
            await conn.publish(1000, b"second", retries=0)
        assert caught.value.code == 429
        assert caught.value.retry_after_ms is not None and caught.value.retry_after_ms > 0, (
            "spec §15: ERROR 429 carries retry_after_ms"
        )


async def test_publish_retries_after_429_honouring_retry_after_ms(start_relay, user_key: axon.Key) -> None:  # type: ignore[no-untyped-def]
    relay = start_relay(allow=[user_key], publish_per_second=4, publish_burst=1)
    async with axon.connect(relay.url, user_key) as conn:
        await conn.publish(1000, b"first", retries=0)
        started = time.monotonic()
        results = [await conn.publish(1000, b"retried %d" % i) for i in range(3)]  # retried, not raised
        assert all(r.seq > 0 and not r.duplicate for r in results)
        assert sum(r.retries for r in results) >= 1
        assert time.monotonic() - started >= 0.5  # 3 events at 4/s after the burst
        with pytest.raises(axon.RateLimitedError) as caught:
            await conn.publish(1000, b"probe", retries=0)
        hint = caught.value.retry_after_ms
        assert hint is not None, "spec §15: ERROR 429 carries retry_after_ms"
        started = time.monotonic()
        result = await conn.publish(1000, b"after the hint")
        assert result.retries >= 0 and time.monotonic() - started >= hint / 1000 * 0.9


# -- direct messages, administration ---------------------------------------------------


async def test_dm_delivered_only_to_parties(relay: RelayProcess, admin_key: axon.Key, user_key: axon.Key) -> None:
    bob = axon.Key.generate()
    async with axon.connect(relay.url, admin_key) as admin:
        await admin.allow(bob)
    async with axon.connect(relay.url, user_key) as alice_conn, axon.connect(relay.url, bob) as bob_conn:
        sub = bob_conn.subscribe([{"kinds": [2000]}])
        await collect_until_eose(sub)
        sent = await alice_conn.send_dm(bob.public_hex, b"secret for bob")
        event = await sub.next(timeout=5)
        assert isinstance(event, axon.Event) and event.id == sent.id
        assert axon.open_dm(bob, event) == b"secret for bob"
        assert bob_conn.open_dm(event) == b"secret for bob"
        assert alice_conn.open_dm(event) == b"secret for bob"  # the author can read its own
        assert event.tag("p") == bob.public_hex
        await sub.close()
    carol = axon.Key.generate()
    async with axon.connect(relay.url, admin_key) as admin:
        await admin.allow(carol)
    async with axon.connect(relay.url, carol) as carol_conn:
        assert await carol_conn.query([{"kinds": [2000]}]) == []


async def test_admin_allow_revoke_allowlist(relay: RelayProcess, admin_key: axon.Key, user_key: axon.Key) -> None:
    newcomer = axon.Key.generate()
    async with axon.connect(relay.url, admin_key) as admin:
        result = await admin.allow(newcomer.public_hex)
        assert result.seq > 0
        assert await admin.allowlist() == [newcomer.public_hex]
        async with axon.connect(relay.url, newcomer) as conn:
            await conn.publish(1000, b"I am in")
        await admin.revoke(newcomer)
        assert await admin.allowlist() == []
        log = await admin.admin_log()
        assert [e.kind for e in log] == [9000, 9001]
        with pytest.raises(axon.ForbiddenError):
            await axon.connect(relay.url, newcomer)
        with pytest.raises(axon.DuplicateError) as caught:
            await admin.revoke(user_key)  # listed in relay.yaml: refused with 409
        assert caught.value.code == 409
    async with axon.connect(relay.url, user_key) as conn:
        with pytest.raises(axon.ForbiddenError):
            await conn.allow(axon.Key.generate())  # not an admin


async def test_revocation_closes_the_connection_with_a_clear_error(
    relay: RelayProcess, admin_key: axon.Key
) -> None:
    agent = axon.Key.generate()
    async with axon.connect(relay.url, admin_key) as admin:
        await admin.allow(agent)
        async with axon.connect(relay.url, agent, reconnect_delay=(0.05, 0.2)) as conn:
            sub = conn.subscribe([{"kinds": [1000]}], resume=True)
            await collect_until_eose(sub)
            await admin.revoke(agent)
            with pytest.raises(axon.ForbiddenError) as caught:
                await sub.next(timeout=10)  # resume=True does not retry a revocation
            assert caught.value.code == 403
            assert "revoked" in str(caught.value)
            with pytest.raises(axon.ForbiddenError):
                await conn.publish(1000, b"after revocation")


# -- bad input never reaches the relay ---------------------------------------------------


async def test_bad_input_raises_before_sending(relay: RelayProcess, user_key: axon.Key) -> None:
    with pytest.raises(TypeError):
        axon.connect(relay.url, user_key.public_hex)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        axon.connect(relay.url, user_key.seed)  # type: ignore[arg-type]
    async with axon.connect(relay.url, user_key) as conn:
        assert conn._conn is not None
        connection = conn._conn
        sent: List[bytes] = []
        original = connection.write

        def counting_write(frame: bytes) -> None:  # every frame the client sends passes here
            sent.append(frame)
            original(frame)

        connection.write = counting_write  # type: ignore[method-assign]
        with pytest.raises(axon.TooLargeError) as too_large:
            await conn.publish(1000, b"x" * 65537)
        assert too_large.value.code == 413 and too_large.value.local
        with pytest.raises(axon.InvalidError):
            await conn.publish(1000, b"x", tags=[("t", "v" * 1025)])
        with pytest.raises(axon.InvalidError):
            await conn.publish(70000, b"x")
        with pytest.raises(TypeError):
            await conn.publish(1000, 42)  # type: ignore[arg-type]
        with pytest.raises(axon.InvalidError):
            await conn.send_dm("zz" * 32, b"hi")  # bad hex
        with pytest.raises(axon.InvalidError):
            await conn.send_dm("ab" * 31, b"hi")  # wrong length
        with pytest.raises(axon.InvalidError):
            await conn.query([{"ids": ["xyz"]}])
        with pytest.raises(axon.InvalidError):
            await conn.query([{"authors": ["abc"]}])  # odd number of hex digits
        with pytest.raises(axon.InvalidError):
            conn.subscribe([{"kind": [1000]}])  # mistyped key
        with pytest.raises(axon.InvalidError):
            await conn.allow("not-a-key")
        with pytest.raises(TypeError):
            await conn.publish_event(b"raw bytes")  # type: ignore[arg-type]
        assert sent == [], "nothing may be sent for bad input"
        ok = await conn.publish(1000, b"still fine")
        assert ok.seq > 0 and len(sent) == 1


# -- keys interoperate with the axon CLI ---------------------------------------------------


async def test_key_files_interoperate_with_the_cli(relay: RelayProcess, tmp_path, user_key: axon.Key) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from conftest import axon_bin

    cli_key_path = tmp_path / "cli.key"
    printed = subprocess.run(
        [axon_bin(), "keygen", "--out", str(cli_key_path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert axon.Key.load(cli_key_path).public_hex == printed
    py_key_path = tmp_path / "py.key"
    user_key.save(py_key_path)
    out = subprocess.run(
        [axon_bin(), "publish", "--url", relay.url, "--relay-url", relay.relay_url, "--key", str(py_key_path),
         "--kind", "1000", "--tag", "topic=cli", "from the cli"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    async with axon.connect(relay.url, user_key) as conn:
        events = await conn.query([{"tags": {"topic": ["cli"]}}])
        assert [e.id_hex for e in events] == [out[0]] and events[0].seq == int(out[1])
        assert events[0].pubkey_hex == user_key.public_hex and events[0].verify()
