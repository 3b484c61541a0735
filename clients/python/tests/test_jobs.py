"""Job queues (spec §14) against the real relay: workers, leases, request/reply."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Awaitable, Callable, Dict, List

import pytest

import axon
from conftest import RelayProcess


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def results_for(conn: axon.Relay, kind: int = 6000) -> Dict[str, List[axon.Event]]:
    by_job: Dict[str, List[axon.Event]] = collections.defaultdict(list)
    for event in await conn.query([{"kinds": [kind]}], after_seq=0):
        for value in event.tag_values("e"):
            by_job[value].append(event)
    return by_job


async def test_three_workers_sixty_jobs_each_completed_once(relay: RelayProcess, user_key: axon.Key) -> None:
    handled: Dict[str, List[int]] = collections.defaultdict(list)

    def handler_for(worker: int) -> Callable[[axon.Job], Awaitable[bytes]]:
        async def handle(job: axon.Job) -> bytes:
            handled[job.id_hex].append(worker)
            await asyncio.sleep(0.005)
            return b"done:" + job.content

        return handle

    conns = [await axon.connect(relay.url, user_key) for _ in range(4)]
    requester, workers = conns[0], conns[1:]
    try:
        tasks = [
            asyncio.create_task(w.work("g", 5000, handler_for(i), concurrency=4, lease_secs=30))
            for i, w in enumerate(workers)
        ]
        published = await asyncio.gather(*(requester.publish(5000, f"job{i}") for i in range(60)))
        job_ids = {p.id_hex for p in published}

        async def all_results() -> bool:
            return set(await results_for(requester)) >= job_ids

        deadline = time.monotonic() + 20
        while not await all_results():
            assert time.monotonic() < deadline, "not every job got a result"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # room for a (wrong) second completion to show up
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        results = await results_for(requester)
        assert set(results) == job_ids
        for job_hex in job_ids:
            assert len(results[job_hex]) == 1, f"job {job_hex} has {len(results[job_hex])} results"
            assert len(handled[job_hex]) == 1, f"job {job_hex} was handled {handled[job_hex]}"
            result = results[job_hex][0]
            assert result.kind == 6000 and result.content.startswith(b"done:job")
        assert len({w for ws in handled.values() for w in ws}) >= 2  # the work was shared
    finally:
        for conn in conns:
            await conn.close()


async def test_dropped_connection_reoffers_the_job_to_another_worker(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as a, axon.connect(relay.url, user_key) as b:
        queue_a = a.jobs("g", 5000, lease_secs=60)
        job_id = (await a.publish(5000, b"x")).id
        job_a = await queue_a.next(timeout=10)
        assert job_a.id == job_id and job_a.attempt == 1
        assert job_a.lease_until_ms > time.time() * 1000

        queue_b = b.jobs("g", 5000, lease_secs=60)
        with pytest.raises(asyncio.TimeoutError):
            await queue_b.next(timeout=0.5)  # subscribed; a holds the job
        assert a._conn is not None
        await a._conn.ws.close()  # a's connection drops while it holds the lease

        job_b = await queue_b.next(timeout=10)
        assert job_b.id == job_id and job_b.attempt == 2
        await job_b.complete(b"from b")

        with pytest.raises(axon.LeaseLostError) as caught:
            await job_a.complete(b"from a")
        assert caught.value.code == 412
        assert [e.content for e in (await results_for(b))[job_id.hex()]] == [b"from b"]
        await queue_a.close()
        await queue_b.close()


async def test_queue_resubscribes_after_reconnect(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key, reconnect_delay=(0.05, 0.2)) as worker:
        async with worker.jobs("g", 5000) as queue:
            first = (await worker.publish(5000, b"1")).id
            job = await queue.next(timeout=10)
            assert job.id == first
            assert worker._conn is not None
            await worker._conn.ws.close()
            with pytest.raises(axon.LeaseLostError):
                await job.ack()
            with pytest.raises(axon.LeaseLostError) as caught:
                await job.complete(b"after the drop")
            assert caught.value.local and job.lease_lost
            again = await queue.next(timeout=10)  # the same job, offered to the new subscription
            assert again.id == first and again.attempt == 2 and queue.reconnects == 1
            await again.ack()


async def test_auto_extend_keeps_a_slow_job(relay: RelayProcess, user_key: axon.Key) -> None:
    offers: List[int] = []

    async def slow(job: axon.Job) -> bytes:
        offers.append(job.attempt)
        await asyncio.sleep(2.5)
        return b"slow done"

    async with axon.connect(relay.url, user_key) as a, axon.connect(relay.url, user_key) as b:
        job_id = (await a.publish(5000, b"slow")).id
        worker_a = asyncio.create_task(a.work("g", 5000, slow, lease_secs=1, max_jobs=1))
        await wait_for(lambda: len(offers) == 1, what="the first offer")
        # a second worker with free capacity: it would get the job if the lease lapsed
        queue_b = b.jobs("g", 5000, lease_secs=1)
        with pytest.raises(asyncio.TimeoutError):
            await queue_b.next(timeout=3.0)
        assert await asyncio.wait_for(worker_a, 10) == 1
        assert offers == [1]
        results = (await results_for(a))[job_id.hex()]
        assert [e.content for e in results] == [b"slow done"]
        await queue_b.close()


async def test_failing_handler_nacks_and_the_job_is_offered_again(relay: RelayProcess, user_key: axon.Key) -> None:
    attempts: List[int] = []

    async def flaky(job: axon.Job) -> str:
        attempts.append(job.attempt)
        if job.attempt < 3:
            raise RuntimeError("transient failure")
        return "ok on attempt 3"

    async with axon.connect(relay.url, user_key) as conn:
        job_id = (await conn.publish(5000, b"flaky")).id
        handled = await asyncio.wait_for(
            conn.work("g", 5000, flaky, max_jobs=3, backoff=(0.0, 0.0), lease_secs=30), 15
        )
        assert handled == 3 and attempts == [1, 2, 3]
        results = (await results_for(conn))[job_id.hex()]
        assert [e.content for e in results] == [b"ok on attempt 3"]


async def test_job_fail_with_delay_and_explicit_ack(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        async with conn.jobs("g", [5000, 5001], lease_secs=30) as queue:
            job_id = (await conn.publish(5001, b"x")).id
            job = await queue.next(timeout=10)
            until = await job.extend(20)
            assert until == job.lease_until_ms and until > time.time() * 1000
            started = time.monotonic()
            await job.fail(delay=1)
            with pytest.raises(axon.InvalidError):
                await job.ack()  # already given back (local check)
            again = await queue.next(timeout=10)
            assert again.id == job_id and again.attempt == 2
            assert time.monotonic() - started >= 0.9
            await again.ack()
            with pytest.raises(asyncio.TimeoutError):
                await queue.next(timeout=0.5)


async def test_request_round_trip_with_a_worker(relay: RelayProcess, user_key: axon.Key) -> None:
    async def upper(job: axon.Job) -> bytes:
        return job.content.upper()

    async with axon.connect(relay.url, user_key) as client, axon.connect(relay.url, user_key) as worker:
        task = asyncio.create_task(worker.work("g", 5000, upper, concurrency=2))
        try:
            replies = await asyncio.gather(*(client.request(5000, f"hello {i}", timeout=10) for i in range(5)))
            assert [r.content for r in replies] == [f"HELLO {i}".encode() for i in range(5)]
            for reply in replies:
                assert reply.kind == 6000 and reply.pubkey == user_key.public_key
            with pytest.raises(axon.InvalidError):
                await client.request(1000, b"not a job kind")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        with pytest.raises(asyncio.TimeoutError):
            await client.request(5000, b"nobody works on this", timeout=0.5)


async def test_late_complete_after_the_lease_was_lost(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as a, axon.connect(relay.url, user_key) as b:
        queue_a = a.jobs("g", 5000, lease_secs=1)
        job_id = (await a.publish(5000, b"x")).id
        job_a = await queue_a.next(timeout=10)
        queue_b = b.jobs("g", 5000, lease_secs=30)
        job_b = await queue_b.next(timeout=10)  # offered again once a's lease lapsed
        assert job_b.id == job_id and job_b.attempt == 2
        with pytest.raises(axon.LeaseLostError) as caught:
            await job_a.complete(b"too late")
        assert caught.value.code == 412 and job_a.lease_lost
        with pytest.raises(axon.LeaseLostError):
            await job_a.extend()
        first = await job_b.complete(b"on time")
        assert not first.duplicate and first.seq > 0
        assert [e.content for e in (await results_for(a))[job_id.hex()]] == [b"on time"]
        await queue_a.close()
        await queue_b.close()


async def test_completing_publish_retry_is_success(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        async with conn.jobs("g", 5000) as queue:
            await conn.publish(5000, b"x")
            job = await queue.next(timeout=10)
            result = conn.sign(6000, b"r", [("e", job.id_hex)])
            ack = {"sub_id": job.sub_id, "job": job.id}
            first = await conn._publish_event(result, ack=ack)
            again = await conn._publish_event(result, ack=ack)
            assert not first.duplicate and again.duplicate and again.id == first.id


def test_local_validation() -> None:
    key = axon.Key.generate()
    relay = axon.Relay("ws://127.0.0.1:1", key)
    with pytest.raises(axon.InvalidError):
        relay.jobs("g", 1000)
    with pytest.raises(axon.InvalidError):
        relay.jobs("", 5000)
    with pytest.raises(axon.InvalidError):
        relay.jobs("g", 5000, lease_secs=0)
    with pytest.raises(axon.InvalidError):
        relay.jobs("g", 5000, max_in_flight=257)
    queue = relay.jobs("g", [5000, 5001], filters=[{"tags": {"topic": ["a"]}}])
    assert queue.filters == [{"kinds": [5000, 5001], "tags": [{"name": "topic", "values": ["a"]}]}]
    assert axon.error_for_code(412, "lease-lost: x").__class__ is axon.LeaseLostError


async def test_async_with_job_nacks_on_error_and_acks_on_exit(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key) as conn:
        async with conn.jobs("g", 5000, lease_secs=1) as queue:
            job_id = (await conn.publish(5000, b"x")).id
            job = await queue.next(timeout=10)
            with pytest.raises(RuntimeError):
                async with job:
                    raise RuntimeError("boom")
            assert job.settled  # NACKed with a delay of 1 s (attempt 1)
            again = await queue.next(timeout=10)
            assert again.id == job_id and again.attempt == 2
            async with again:
                await asyncio.sleep(1.5)  # longer than the lease: extended in the background
            assert again.settled  # ACKed on a clean exit
            with pytest.raises(asyncio.TimeoutError):
                await queue.next(timeout=1.2)


async def test_queue_survives_a_relay_restart(relay: RelayProcess, user_key: axon.Key) -> None:
    async with axon.connect(relay.url, user_key, reconnect_delay=(0.05, 0.5)) as conn:
        async with conn.jobs("g", 5000) as queue:
            job_id = (await conn.publish(5000, b"x")).id
            job = await queue.next(timeout=10)
            relay.restart()  # leases are memory only: the job is offered again after the restart
            again = await queue.next(timeout=15)
            assert again.id == job_id and again.attempt == 2 and queue.reconnects >= 1
            with pytest.raises(axon.LeaseLostError):
                await job.complete(b"old lease")
            await again.complete(b"new lease")
            assert [e.content for e in (await results_for(conn))[job_id.hex()]] == [b"new lease"]
