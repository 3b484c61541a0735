"""Job queues (spec §14): competing consumers with leases, and request/reply.

A queue subscription (:meth:`axon.Relay.jobs`) yields :class:`Job` objects; each is
held under a lease until it is completed (:meth:`Job.complete`: result and completion in
one step), acknowledged (:meth:`Job.ack`), given back (:meth:`Job.fail`) or its lease
runs out. :meth:`axon.Relay.work` runs a handler per job with automatic lease
extension, and :meth:`axon.Relay.request` publishes a job and waits for its result."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple, Union

from .errors import (
    AuthError,
    AxonError,
    ConnectionClosedError,
    ForbiddenError,
    InvalidError,
    LeaseLostError,
    RateLimitedError,
    UnavailableError,
)
from .event import Event, TagsInput, normalize_tags

if TYPE_CHECKING:
    from .client import PublishResult, Relay, _Connection

__all__ = ["Job", "JobQueue", "Handler"]

log = logging.getLogger("axon")

Handler = Callable[["Job"], Awaitable[Union[bytes, str, None]]]
"""A :meth:`axon.Relay.work` handler: ``async def handle(job) -> bytes | str | None``."""

_Item = Tuple[str, Any, Optional["_Connection"]]


def _check_range(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidError(f"{what} must be in {low}..={high}, got {value}", local=True)
    return value


class Job:
    """One job offered to this worker under a lease (spec §14).

    ``event`` is the job request, ``id`` its id (bytes), ``attempt`` the offer number
    (from 1), ``lease_until_ms`` when the lease ends (unix ms; updated by
    :meth:`extend`). Settle it exactly once with :meth:`complete`, :meth:`ack` or
    :meth:`fail`. ``async with job:`` extends the lease automatically while the block
    runs; leaving the block with an exception NACKs the job (with backoff by attempt),
    leaving it normally without settling ACKs it."""

    def __init__(self, queue: "JobQueue", conn: "_Connection", sub_id: str, event: Event, lease: Dict[str, Any]):
        self.queue = queue
        self.relay: "Relay" = queue.relay
        self.event: Event = event
        self.sub_id: str = sub_id
        until = lease.get("until_ms")
        attempt = lease.get("attempt")
        self.lease_until_ms: int = until if isinstance(until, int) else 0
        self.attempt: int = attempt if isinstance(attempt, int) else 1
        self.settled: bool = False
        """True once the job was completed, acknowledged or given back."""
        self.lease_lost: bool = False
        """True once the relay said this worker no longer holds the lease."""
        self._conn = conn
        self._extender: Optional["asyncio.Task[None]"] = None

    @property
    def id(self) -> bytes:
        """The job id: the id of the job request event."""
        return self.event.id

    @property
    def id_hex(self) -> str:
        """The job id as lowercase hex (the value of a result's ``e`` tag)."""
        return self.event.id.hex()

    @property
    def kind(self) -> int:
        """The job request's kind."""
        return self.event.kind

    @property
    def content(self) -> bytes:
        """The job request's content (the input)."""
        return self.event.content

    def __repr__(self) -> str:
        return f"axon.Job(id={self.id_hex[:16]}…, kind={self.kind}, attempt={self.attempt})"

    def _check_open(self) -> None:
        if self.settled:
            raise InvalidError("this job was already completed, acknowledged or given back", local=True)

    async def _frame(self, frame_type: int, extra: Dict[str, Any]) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"sub_id": self.sub_id, "job": self.id, **extra}
        try:
            return await self.relay._job_frame(self._conn, frame_type, payload)
        except LeaseLostError:
            self.lease_lost = True
            raise
        except ConnectionClosedError:
            self.lease_lost = True
            raise LeaseLostError(
                "lease-lost: the connection dropped (leases do not survive a disconnect)",
                code=412,
                event_id=self.id,
                sub_id=self.sub_id,
            ) from None

    async def ack(self) -> None:
        """Marks the job done in the group without publishing a result (ACK). Raises
        :class:`LeaseLostError` when the lease is gone, :class:`ExpiredError` (410) when
        the job request expired."""
        from .client import ACK

        self._check_open()
        await self._frame(ACK, {})
        self.settled = True
        self._stop_extender()

    async def fail(self, delay: Union[int, float, timedelta] = 0) -> None:
        """Gives the job back (NACK): the lease ends and the job is offered again after
        ``delay`` seconds (rounded up to whole seconds)."""
        from .client import NACK

        self._check_open()
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise InvalidError("delay must not be negative", local=True)
        extra: Dict[str, Any] = {}
        if seconds > 0:
            extra["delay_secs"] = math.ceil(seconds)
        await self._frame(NACK, extra)
        self.settled = True
        self._stop_extender()

    async def extend(self, lease_secs: Optional[int] = None) -> int:
        """Renews the lease from now for ``lease_secs`` (1..=3600; default the queue's
        ``lease_secs``); returns (and stores in ``lease_until_ms``) the new end."""
        from .client import EXTEND

        self._check_open()
        extra: Dict[str, Any] = {}
        if lease_secs is not None:
            extra["lease_secs"] = _check_range(lease_secs, "lease_secs", 1, 3600)
        answer = await self._frame(EXTEND, extra)
        until = answer.get("until_ms")
        if isinstance(until, int) and not isinstance(until, bool):
            self.lease_until_ms = until
        return self.lease_until_ms

    async def complete(
        self,
        result: Union[bytes, str] = b"",
        kind: Optional[int] = None,
        tags: Optional[TagsInput] = None,
        *,
        expires_in: Optional[Union[int, float, timedelta]] = None,
    ) -> "PublishResult":
        """Publishes the result and completes the job in one step (PUBLISH with
        ``ack``). ``kind`` defaults to the request's kind + 1000; an ``e`` tag with the
        job id (hex) is added to ``tags``. Returns the :class:`PublishResult` (a 409 on a
        retry counts as success, ``duplicate=True``). Raises :class:`LeaseLostError`
        when the lease is gone (the result was not stored)."""
        self._check_open()
        if kind is None:
            kind = self.kind + 1000
        tag_list = [("e", self.id_hex)] + [t for t in normalize_tags(tags) if tuple(t) != ("e", self.id_hex)]
        event = self.relay.sign(kind, result, tag_list, expires_in=expires_in)
        ack = {"sub_id": self.sub_id, "job": self.id}
        if self._conn is not self.relay._conn or self._conn.closed.is_set():
            self.lease_lost = True
            raise LeaseLostError(
                "lease-lost: the connection that held the lease is gone (leases do not survive a disconnect)",
                code=412,
                event_id=event.id,
                sub_id=self.sub_id,
                local=True,
            )
        try:
            answer = await self.relay._publish_event(event, ack=ack)
        except LeaseLostError:
            self.lease_lost = True
            raise
        except ConnectionClosedError:
            # The PUBLISH may or may not have been stored. A retry on a new connection
            # answers 409 if it was (success), else 412 (the lease died with the connection).
            try:
                answer = await self.relay._publish_event(event, ack=ack)
            except LeaseLostError:
                self.lease_lost = True
                raise
        self.settled = True
        self._stop_extender()
        return answer

    # -- automatic lease extension ------------------------------------------------------

    def start_auto_extend(self, every: Optional[float] = None) -> None:
        """Extends the lease in the background every ``every`` seconds (default a third
        of the queue's ``lease_secs``) until the job is settled or the lease is lost."""
        if self._extender is None or self._extender.done():
            interval = every if every is not None else max(0.2, self.queue.lease_secs / 3)
            self._extender = asyncio.get_running_loop().create_task(self._auto_extend(interval))

    async def _auto_extend(self, interval: float) -> None:
        while not self.settled:
            await asyncio.sleep(interval)
            if self.settled:
                return
            try:
                await self.extend()
            except (LeaseLostError, ConnectionClosedError) as error:
                log.info("axon: job %s: lease lost while working (%s)", self.id_hex[:16], error)
                return
            except AxonError as error:  # 410: the job expired; nothing more to extend
                log.info("axon: job %s: extend refused (%s)", self.id_hex[:16], error)
                return

    def _stop_extender(self) -> None:
        task = self._extender
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    async def __aenter__(self) -> "Job":
        self.start_auto_extend()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop_extender()
        if self.settled or self.lease_lost:
            return
        try:
            if exc_type is None:
                await self.ack()
            elif not isinstance(exc, asyncio.CancelledError):
                await self.fail(_nack_delay(self.attempt, 1.0, 300.0))
        except (LeaseLostError, ConnectionClosedError):
            pass


def _nack_delay(attempt: int, base: float, cap: float) -> float:
    """1, 2, 4, … × base seconds by attempt, at most cap."""
    return float(min(cap, base * 2.0 ** max(0, attempt - 1)))


class JobQueue:
    """A queue subscription made by :meth:`axon.Relay.jobs`: ``async for job in
    queue`` yields :class:`Job` objects. When the connection drops (or the relay ends
    the subscription with 503) it reconnects and subscribes again with backoff; the jobs
    it held are lost (leases do not survive a disconnect) and are offered again.
    ``close()`` (or leaving ``async with``) unsubscribes, which also ends its leases."""

    def __init__(
        self,
        relay: "Relay",
        group: str,
        filters: List[Dict[str, Any]],
        lease_secs: int,
        max_in_flight: int,
        after_seq: Optional[int],
    ) -> None:
        self.relay = relay
        self.group = group
        self.filters = filters
        self.lease_secs = lease_secs
        self.max_in_flight = max_in_flight
        self.after_seq = after_seq
        self.sub_id: Optional[str] = None
        self.reconnects = 0
        self._queue: "asyncio.Queue[_Item]" = asyncio.Queue()
        self._conn: Optional["_Connection"] = None
        self._closed = False
        self._done: Optional[AxonError] = None
        self._interrupted: Optional[AxonError] = None

    # -- called by the Relay's reader ---------------------------------------------------

    def _on_event(self, payload: Dict[str, Any]) -> None:
        seq = payload.get("seq")
        lease = payload.get("lease")
        try:
            event = Event.from_wire(payload.get("event"), seq if isinstance(seq, int) else None)
        except AxonError as error:
            log.warning("axon: the relay offered an invalid job: %s", error)
            return
        lease_map: Dict[str, Any] = {}
        if isinstance(lease, list):  # a decoded map: a list of (key, value) pairs
            for pair in lease:
                if isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str):
                    lease_map.setdefault(pair[0], pair[1])
        elif isinstance(lease, dict):
            lease_map = dict(lease)
        self._queue.put_nowait(("job", (event, lease_map), self._conn))

    def _on_eose(self) -> None:
        pass  # queue subscriptions have no EOSE

    def _on_error(self, error: AxonError) -> None:
        self._queue.put_nowait(("error", error, None))

    def _on_disconnect(self, conn: "_Connection", error: AxonError) -> None:
        if conn is self._conn:
            self._queue.put_nowait(("disconnect", error, conn))

    def _finish(self, error: AxonError) -> None:
        self._queue.put_nowait(("closed", error, None))

    # -- the consumer side --------------------------------------------------------------

    async def _start(self) -> None:
        from .client import SUBSCRIBE, _pack

        conn = await self.relay._connection()
        if self.sub_id is not None:
            self.relay._subs.pop(self.sub_id, None)
        self.sub_id = self.relay._new_sub_id()
        payload: Dict[str, Any] = {
            "sub_id": self.sub_id,
            "filters": self.filters,
            "group": self.group,
            "lease_secs": self.lease_secs,
            "max_in_flight": self.max_in_flight,
        }
        if self.after_seq is not None:
            payload["after_seq"] = self.after_seq
        self._conn = conn
        self.relay._subs[self.sub_id] = self
        await self.relay._send(_pack(SUBSCRIBE, payload))

    async def _recover(self, error: AxonError) -> None:
        from .client import _backoff

        attempt = 0
        hint = error.retry_after_ms
        while True:
            if self._closed or self.relay._closed:
                raise ConnectionClosedError("the job queue was closed")
            delay = _backoff(attempt, *self.relay.reconnect_delay)
            if hint is not None:
                delay = max(delay, hint / 1000)
            await asyncio.sleep(delay)
            try:
                await self._start()
                return
            except (AuthError, ForbiddenError):
                raise
            except (ConnectionClosedError, UnavailableError, RateLimitedError) as retry:
                log.info("axon: job queue resubscribe failed (%s); retrying", retry)
                hint = retry.retry_after_ms
                attempt += 1

    async def next(self, timeout: Optional[float] = None) -> Job:
        """The next job offered (raises ``asyncio.TimeoutError`` after ``timeout``)."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Job:
        from .client import _copy_error

        if self._done is not None:
            raise _copy_error(self._done)
        if self.sub_id is None:
            await self._start()
        while True:
            if self._interrupted is not None:
                try:
                    await self._recover(self._interrupted)
                except (AuthError, ForbiddenError) as refused:
                    self._done = refused
                    raise
                self._interrupted = None
            kind, value, conn = await self._queue.get()
            if kind == "job":
                if conn is not self._conn or conn is None or self.sub_id is None:
                    continue  # an offer to an earlier subscription: its lease is gone
                event, lease = value
                return Job(self, conn, self.sub_id, event, lease)
            if kind == "closed":
                self._done = value
                raise _copy_error(value)
            if kind == "disconnect" and conn is not self._conn:
                continue
            error: AxonError = value
            fatal = isinstance(error, (AuthError, ForbiddenError)) or (
                kind == "error" and not isinstance(error, UnavailableError)
            )
            if fatal or self._closed:
                self._done = error
                self.relay._subs.pop(self.sub_id or "", None)
                raise _copy_error(error)
            self.reconnects += 1
            self.relay._subs.pop(self.sub_id or "", None)
            self._interrupted = error

    def __aiter__(self) -> AsyncIterator[Job]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Job]:
        try:
            while True:
                try:
                    job = await self._next()
                except ConnectionClosedError:
                    if self._closed:
                        return
                    raise
                yield job
        finally:
            await self.close()

    async def close(self) -> None:
        """Unsubscribes (no-op when already closed); unfinished leases end."""
        from .client import UNSUBSCRIBE, _pack

        if self._closed:
            return
        self._closed = True
        sub_id = self.sub_id
        if sub_id is not None:
            self.relay._subs.pop(sub_id, None)
            conn = self.relay._conn
            if conn is not None and not conn.closed.is_set() and conn is self._conn:
                conn.write(_pack(UNSUBSCRIBE, {"sub_id": sub_id}))
        self._queue.put_nowait(("closed", ConnectionClosedError("the job queue was closed"), None))

    async def __aenter__(self) -> "JobQueue":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def run_worker(
    queue: JobQueue,
    handler: Handler,
    *,
    concurrency: int,
    max_jobs: Optional[int],
    backoff: Tuple[float, float],
    extend_every: Optional[float],
) -> int:
    """The loop behind :meth:`axon.Relay.work`; returns how many jobs it handled."""
    slots = asyncio.Semaphore(concurrency)
    tasks: "set[asyncio.Task[None]]" = set()
    handled = 0
    taken = 0

    async def run(job: Job) -> None:
        nonlocal handled
        try:
            job.start_auto_extend(extend_every)
            try:
                result = await handler(job)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("axon: job %s (attempt %d) failed: %r", job.id_hex[:16], job.attempt, error)
                if not job.settled and not job.lease_lost:
                    try:
                        await job.fail(_nack_delay(job.attempt, *backoff))
                    except (LeaseLostError, ConnectionClosedError) as lost:
                        log.info("axon: job %s: NACK failed (%s)", job.id_hex[:16], lost)
                return
            if job.settled:
                return
            try:
                if result is None:
                    await job.ack()
                else:
                    await job.complete(result)
            except LeaseLostError as lost:
                log.warning("axon: job %s: result dropped, the lease was lost (%s)", job.id_hex[:16], lost)
        finally:
            job._stop_extender()
            handled += 1
            slots.release()

    try:
        async with queue:
            while max_jobs is None or taken < max_jobs:
                await slots.acquire()
                try:
                    job = await queue.next()
                except BaseException:
                    slots.release()
                    raise
                taken += 1
                task = asyncio.get_running_loop().create_task(run(job))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    return handled

