"""The connection: WebSocket, CHALLENGE/AUTH (spec §7), pipelined publishes (§8),
subscriptions that resume across disconnects and overflows (§9), DMs (§12) and admin
events (§10)."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import logging
import math
import random
import ssl
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Set,
    Tuple,
    Union,
)
from urllib.parse import urlsplit

import msgpack
import websockets
import websockets.protocol
from websockets.asyncio.client import ClientConnection

from . import dm as _dm
from .errors import (
    AuthError,
    AxonError,
    ConnectionClosedError,
    DuplicateError,
    ForbiddenError,
    InvalidError,
    LeaseLostError,
    RateLimitedError,
    TooLargeError,
    UnavailableError,
    error_for_code,
)
from .event import DEFAULT_LIMITS, Event, Limits, TagsInput, _pairs, _Pairs, normalize_tags
from .keys import Key, parse_pubkey

if TYPE_CHECKING:
    from .jobs import Handler, JobQueue

__all__ = [
    "connect",
    "Relay",
    "Subscription",
    "PublishResult",
    "END_OF_STORED",
    "EndOfStored",
    "fetch_info",
    "Filter",
    "encode_filter",
]

log = logging.getLogger("axon")

# Frame types (spec §6).
AUTH, SUBSCRIBE, UNSUBSCRIBE, PUBLISH = 1, 2, 3, 4
ACK, NACK, EXTEND = 5, 6, 7  # job queues (spec §14)
CHALLENGE, EVENT, EOSE, OK, ERROR = 10, 11, 12, 13, 14

KIND_ALLOW, KIND_REVOKE = 9000, 9001

Filter = Mapping[str, Any]
"""A filter as a plain dict: ``ids``/``authors`` (hex prefixes or bytes), ``kinds``,
``since``, ``until``, ``tags`` (``{"topic": ["hello"]}``) and ``limit`` (spec §9.1)."""


class EndOfStored:
    """The marker a subscription yields once, between stored and live events."""

    _instance: Optional["EndOfStored"] = None

    def __new__(cls) -> "EndOfStored":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "axon.END_OF_STORED"


END_OF_STORED = EndOfStored()
"""Yielded once by :meth:`Relay.subscribe` when the stored events end (EOSE)."""


@dataclass(frozen=True)
class PublishResult:
    """The relay's answer to a publish. ``seq`` is 0 for ephemeral kinds (and for a
    duplicate whose stored seq could not be looked up). ``duplicate`` is True when the
    relay already stored the event (409), which counts as success."""

    id: bytes
    seq: int
    duplicate: bool = False
    retries: int = 0

    @property
    def id_hex(self) -> str:
        """The event id as lowercase hex."""
        return self.id.hex()


# -- filters ------------------------------------------------------------------------

_FILTER_KEYS = ("ids", "authors", "kinds", "since", "until", "tags", "limit")


def _prefix(value: Any, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = bytes.fromhex(value)
        except ValueError:
            raise InvalidError(
                f"filter {what}: {value!r} is not hex (an even number of hex characters)", local=True
            ) from None
    else:
        raise TypeError(f"filter {what} must hold hex str or bytes, got {type(value).__name__}")
    if not 1 <= len(data) <= 32:
        raise InvalidError(f"filter {what}: a prefix must be 1..=32 bytes (2..=64 hex characters)", local=True)
    return data


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"filter {what} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidError(f"filter {what} must be in {low}..={high}, got {value}", local=True)
    return value


def _list(value: Any, what: str, limits: Limits) -> List[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"filter {what} must be a list")
    items = list(value)
    if len(items) > limits.max_filter_items:
        raise InvalidError(f"filter {what} has {len(items)} items, the limit is {limits.max_filter_items}", local=True)
    return items


def encode_filter(flt: Filter, limits: Limits = DEFAULT_LIMITS) -> Dict[str, Any]:
    """Converts a filter dict to its wire form, checking every rule of spec §9.1 (raises
    :class:`InvalidError` or ``TypeError`` before anything is sent)."""
    if not isinstance(flt, Mapping):
        raise TypeError(f"a filter must be a dict, got {type(flt).__name__}")
    unknown = set(flt) - set(_FILTER_KEYS)
    if unknown:
        raise InvalidError(f"unknown filter key(s) {sorted(map(str, unknown))}; known: {list(_FILTER_KEYS)}", local=True)
    out: Dict[str, Any] = {}
    if "ids" in flt:
        out["ids"] = [_prefix(v, "ids") for v in _list(flt["ids"], "ids", limits)]
    if "authors" in flt:
        out["authors"] = [_prefix(v, "authors") for v in _list(flt["authors"], "authors", limits)]
    if "kinds" in flt:
        out["kinds"] = [_int(v, "kinds", 0, 65535) for v in _list(flt["kinds"], "kinds", limits)]
    for key in ("since", "until"):
        if key in flt:
            out[key] = _int(flt[key], key, -(2**63), 2**63 - 1)
    if "tags" in flt:
        tags = flt["tags"]
        conditions: List[Tuple[Any, Any]]
        if isinstance(tags, Mapping):
            conditions = list(tags.items())
        else:
            conditions = [(c.get("name"), c.get("values")) if isinstance(c, Mapping) else (None, None) for c in tags]
        if len(conditions) > limits.max_filter_items:
            raise InvalidError(f"filter tags: more than {limits.max_filter_items} conditions", local=True)
        wire_tags = []
        for name, values in conditions:
            if not isinstance(name, str):
                raise TypeError('filter tags must be {"name": ["value", ...]}')
            if not 1 <= len(name.encode()) <= 64:
                raise InvalidError("filter tag name must be 1..=64 bytes", local=True)
            if isinstance(values, str):
                values = [values]
            values = _list(values, f"tags[{name!r}]", limits)
            if not values:
                raise InvalidError(f"filter tag {name!r} needs at least one value", local=True)
            if not all(isinstance(v, str) for v in values):
                raise TypeError(f"filter tag {name!r} values must be str")
            wire_tags.append({"name": name, "values": values})
        out["tags"] = wire_tags
    if "limit" in flt:
        out["limit"] = _int(flt["limit"], "limit", 0, 2**64 - 1)
    return out


def _encode_filters(filters: Union[Filter, Sequence[Filter]], limits: Limits) -> List[Dict[str, Any]]:
    if isinstance(filters, Mapping):
        filters = [filters]
    items = list(filters)
    if not items:
        raise InvalidError("a subscription needs at least one filter ({} matches everything)", local=True)
    if len(items) > limits.max_filters:
        raise InvalidError(f"{len(items)} filters, the limit is {limits.max_filters}", local=True)
    return [encode_filter(f, limits) for f in items]


# -- HTTP info document -------------------------------------------------------------


def _http_url(url: str) -> Tuple[str, int, bool, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https"):
        raise InvalidError(f"relay URL must start with ws:// or wss://, got {url!r}", local=True)
    secure = parts.scheme in ("wss", "https")
    if not parts.hostname:
        raise InvalidError(f"relay URL has no host: {url!r}", local=True)
    port = parts.port or (443 if secure else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port, secure, path


async def fetch_info(url: str, timeout: float = 10.0) -> Dict[str, Any]:
    """The relay's info document (spec §11): ``GET`` of the relay's address over
    http(s) with ``Accept: application/json``."""
    host, port, secure, path = _http_url(url)

    async def get() -> Dict[str, Any]:
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl.create_default_context() if secure else None)
        try:
            host_header = host if ":" not in host else f"[{host}]"
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host_header}:{port}\r\nAccept: application/json\r\n"
                "User-Agent: axon-client-python\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ")
        if len(status) < 2 or status[1] != "200":
            raise ConnectionClosedError(f"GET {url} (info document) answered {lines[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = _dechunk(body)
        info: Dict[str, Any] = json.loads(body)
        return info

    try:
        return await asyncio.wait_for(get(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError) as error:
        raise ConnectionClosedError(
            f"cannot read the info document of {url}: {error!r} (is the relay running? pass relay_url= to skip this)"
        ) from None


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


# -- frames -------------------------------------------------------------------------


def _pack(frame_type: int, payload: Dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb([frame_type, payload], use_bin_type=True)
    return data


def _unpack(data: bytes) -> Tuple[int, Dict[str, Any]]:
    value = msgpack.unpackb(data, raw=False, object_pairs_hook=_pairs, strict_map_key=False, timestamp=0)
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], _Pairs):
        raise InvalidError("a frame must be [type, payload map]")
    frame_type = value[0]
    if isinstance(frame_type, bool) or not isinstance(frame_type, int):
        raise InvalidError("frame type must be an integer")
    payload: Dict[str, Any] = {}
    for key, item in value[1]:
        if isinstance(key, str) and key not in payload:
            payload[key] = item
    return frame_type, payload


def _error_from_payload(payload: Dict[str, Any]) -> AxonError:
    code = payload.get("code")
    message = payload.get("message")
    event_id = payload.get("id")
    sub_id = payload.get("sub_id")
    seq = payload.get("seq")
    retry = payload.get("retry_after_ms")
    return error_for_code(
        code if isinstance(code, int) else 0,
        message if isinstance(message, str) else "",
        event_id=event_id if isinstance(event_id, bytes) else None,
        sub_id=sub_id if isinstance(sub_id, str) else None,
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        retry_after_ms=retry if isinstance(retry, int) and not isinstance(retry, bool) else None,
    )


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base * 2^attempt)."""
    delay = min(cap, base * (2**attempt))
    return random.uniform(delay / 2, delay)


def _seconds(value: Union[int, float, timedelta]) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expires_in must be seconds (int/float) or a timedelta, got {type(value).__name__}")
    return float(value)


# -- the connection -----------------------------------------------------------------


class _Stream(Protocol):
    """What the reader needs from a subscription (plain or job queue)."""

    def _on_event(self, payload: Dict[str, Any]) -> None: ...

    def _on_eose(self) -> None: ...

    def _on_error(self, error: AxonError) -> None: ...

    def _on_disconnect(self, conn: "_Connection", error: AxonError) -> None: ...

    def _finish(self, error: AxonError) -> None: ...



class _Connection:
    """One authenticated WebSocket and its reader task."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.reader: Optional["asyncio.Task[None]"] = None
        self.error: Optional[AxonError] = None  # why it ended (a connection-level ERROR)
        self.closed = asyncio.Event()
        self.outbox: List[bytes] = []
        self.flush_scheduled = False

    def write(self, data: bytes) -> None:
        """Queues a frame; every frame queued in one event-loop turn goes out in one
        socket write (pipelined publishes cost one system call per batch, not per event)."""
        self.outbox.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        frames, self.outbox = self.outbox, []
        ws = self.ws
        if not frames or ws.state is not websockets.protocol.State.OPEN:
            return  # closing: the reader fails whatever is pending
        protocol = ws.protocol
        for frame in frames:
            protocol.send_binary(frame)
        chunks = protocol.data_to_send()
        ws.transport.write(b"".join(chunks))


class Relay:
    """A connection to an Axon relay, made by :func:`connect`.

    Publishes are pipelined (any number in flight; replies matched by event id).
    If the connection drops, pending publishes fail with
    :class:`ConnectionClosedError`; the next call reconnects, and subscriptions made
    with ``resume=True`` reconnect by themselves."""

    def __init__(
        self,
        url: str,
        key: Key,
        *,
        relay_url: Optional[str] = None,
        timeout: float = 10.0,
        verify_events: bool = False,
        reconnect_delay: Tuple[float, float] = (0.25, 30.0),
        max_retries: int = 5,
        ping_interval: Optional[float] = 20.0,
    ) -> None:
        if not isinstance(key, Key):
            raise TypeError(f"key must be an axon.Key (axon.Key.load('agent.key')), got {type(key).__name__}")
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        _http_url(url)
        if relay_url is not None and not isinstance(relay_url, str):
            raise TypeError("relay_url must be a str")
        self.url: str = url
        self.key: Key = key
        self.relay_url: Optional[str] = relay_url
        self.info: Dict[str, Any] = {}
        self.limits: Limits = DEFAULT_LIMITS
        self.timeout = timeout
        self.verify_events = verify_events
        self.reconnect_delay = reconnect_delay
        self.max_retries = max_retries
        self.ping_interval = ping_interval
        self._conn: Optional[_Connection] = None
        self._connect_lock = asyncio.Lock()
        self._lookups = asyncio.Semaphore(4)  # concurrent seq look-ups after 409 (subscriptions are bounded)
        self._pending: Dict[bytes, Deque["asyncio.Future[Optional[int]]"]] = {}
        self._subs: Dict[str, _Stream] = {}
        # ACK/NACK/EXTEND answers (OK/ERROR with id = the job), matched by job id
        self._job_pending: Dict[bytes, Deque["asyncio.Future[Dict[str, Any]]"]] = {}
        self._sub_counter = itertools.count(1)
        self._closed = False
        self.connections = 0
        """How many times this Relay has (re)connected."""

    # -- connection management --------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is open and authenticated."""
        return self._conn is not None and not self._conn.closed.is_set()

    async def _connection(self) -> _Connection:
        """The open connection; (re)connects if there is none."""
        if self._closed:
            raise ConnectionClosedError("this Relay was closed")
        conn = self._conn
        if conn is not None and not conn.closed.is_set():
            return conn
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and not conn.closed.is_set():
                return conn
            if self._closed:
                raise ConnectionClosedError("this Relay was closed")
            self._conn = await self._open()
            return self._conn

    async def _open(self) -> _Connection:
        if self.relay_url is None or not self.info:
            try:
                self.info = await fetch_info(self.url, self.timeout)
            except ConnectionClosedError:
                if self.relay_url is None:
                    raise
            else:
                self.limits = Limits.from_info(self.info)
                if self.relay_url is None:
                    relay_url = self.info.get("relay_url")
                    if not isinstance(relay_url, str):
                        raise ConnectionClosedError(f"the info document of {self.url} has no relay_url")
                    self.relay_url = relay_url
        assert self.relay_url is not None
        try:
            ws = await websockets.connect(
                self.url,
                subprotocols=[websockets.Subprotocol("axon.v1")],
                compression=None,
                max_size=None,
                open_timeout=self.timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_interval,
                close_timeout=2,
                proxy=None,
                max_queue=None,
            )
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as error:
            raise ConnectionClosedError(f"cannot connect to {self.url}: {error!r} (is the relay running?)") from None
        try:
            await self._authenticate(ws)
        except BaseException:
            await ws.close()
            raise
        conn = _Connection(ws)
        conn.reader = asyncio.get_running_loop().create_task(self._read_loop(conn))
        self.connections += 1
        return conn

    async def _authenticate(self, ws: ClientConnection) -> None:
        assert self.relay_url is not None

        async def recv() -> Tuple[int, Dict[str, Any]]:
            try:
                data = await asyncio.wait_for(ws.recv(), self.timeout)
            except websockets.ConnectionClosed as closed:
                raise ConnectionClosedError(
                    f"the relay closed the connection during authentication ({closed})",
                    close_code=closed.rcvd.code if closed.rcvd else None,
                ) from None
            except asyncio.TimeoutError:
                raise ConnectionClosedError("no answer from the relay during authentication") from None
            if not isinstance(data, bytes):
                raise ConnectionClosedError("the relay sent a text message during authentication")
            return _unpack(data)

        frame_type, payload = await recv()
        if frame_type == ERROR:
            raise _error_from_payload(payload)
        nonce = payload.get("nonce")
        if frame_type != CHALLENGE or not isinstance(nonce, bytes) or len(nonce) != 32:
            raise ConnectionClosedError(f"expected CHALLENGE, got frame type {frame_type}")
        digest = hashlib.sha256(nonce + self.relay_url.encode()).digest()
        await ws.send(_pack(AUTH, {"pubkey": self.key.public_key, "sig": self.key.sign(digest)}))
        frame_type, payload = await recv()
        if frame_type == ERROR:
            error = _error_from_payload(payload)
            if error.code == 401:
                raise AuthError(
                    f"{error.message} (the AUTH signature covers relay_url {self.relay_url!r}: it must be exactly the "
                    "relay's configured relay_url)",
                    code=401,
                )
            if error.code == 403:
                raise ForbiddenError(
                    f"{error.message} (key {self.key.public_hex} is neither an admin nor on the relay's allowlist)",
                    code=403,
                )
            raise error
        if frame_type != OK or payload.get("id") != self.key.public_key:
            raise ConnectionClosedError(f"unexpected answer to AUTH: frame type {frame_type}")

    async def _read_loop(self, conn: _Connection) -> None:
        ws = conn.ws
        reason: Optional[AxonError] = None
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self._dispatch(conn, message)
        except websockets.ConnectionClosed:
            pass
        except Exception as error:  # a bug or a broken frame: end the connection loudly
            log.exception("axon: reader failed")
            reason = ConnectionClosedError(f"the connection failed: {error!r}")
            await ws.close()
        finally:
            close_code = ws.close_code
            if reason is None:
                if conn.error is not None:
                    reason = conn.error
                else:
                    text = f"the relay closed the connection (close code {close_code}"
                    text += f", {ws.close_reason!r})" if ws.close_reason else ")"
                    reason = ConnectionClosedError(text, close_code=close_code)
            conn.error = reason
            conn.closed.set()
            self._fail_pending(reason)
            for sub in list(self._subs.values()):
                sub._on_disconnect(conn, reason)

    def _fail_pending(self, reason: AxonError) -> None:
        pending, self._pending = self._pending, {}
        for futures in pending.values():
            for future in futures:
                if not future.done():
                    future.set_exception(_copy_error(reason))
        job_pending, self._job_pending = self._job_pending, {}
        for job_futures in job_pending.values():
            for job_future in job_futures:
                if not job_future.done():
                    job_future.set_exception(_copy_error(reason))

    def _dispatch(self, conn: _Connection, data: bytes) -> None:
        try:
            frame_type, payload = _unpack(data)
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            log.warning("axon: ignoring a frame that does not decode: %s", error)
            return
        if frame_type == EVENT:
            sub = self._subs.get(payload.get("sub_id"))  # type: ignore[arg-type]
            if sub is not None:
                sub._on_event(payload)
        elif frame_type == OK:
            if not self._resolve_job(payload.get("id"), payload, None):
                self._resolve(payload.get("id"), payload.get("seq"), None)
        elif frame_type == EOSE:
            sub = self._subs.get(payload.get("sub_id"))  # type: ignore[arg-type]
            if sub is not None:
                sub._on_eose()
        elif frame_type == ERROR:
            relay_error = _error_from_payload(payload)
            if relay_error.event_id is not None:
                if not self._resolve_job(relay_error.event_id, payload, relay_error):
                    self._resolve(relay_error.event_id, None, relay_error)
            elif relay_error.sub_id is not None:
                sub = self._subs.get(relay_error.sub_id)
                if sub is not None:
                    sub._on_error(relay_error)
            else:
                if relay_error.code == 403:
                    relay_error = ForbiddenError(
                        f"{relay_error.message} (the relay refused key {self.key.public_hex}: it was revoked or is no "
                        "longer allowed)",
                        code=403,
                    )
                log.warning("axon: relay error: %s", relay_error)
                conn.error = relay_error

    def _resolve(self, event_id: Any, seq: Any, error: Optional[AxonError]) -> None:
        if not isinstance(event_id, bytes):
            return
        futures = self._pending.get(event_id)
        if not futures:
            return
        future = futures.popleft()
        if not futures:
            del self._pending[event_id]
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(seq if isinstance(seq, int) and not isinstance(seq, bool) else None)

    def _resolve_job(self, job_id: Any, payload: Dict[str, Any], error: Optional[AxonError]) -> bool:
        """Answers the oldest pending ACK/NACK/EXTEND for ``job_id``; False if none."""
        if not isinstance(job_id, bytes):
            return False
        futures = self._job_pending.get(job_id)
        if not futures:
            return False
        future = futures.popleft()
        if not futures:
            del self._job_pending[job_id]
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(payload)
        return True

    async def _job_frame(self, conn: _Connection, frame_type: int, payload: Dict[str, Any]) -> Dict[str, Any]:
        """Sends ACK/NACK/EXTEND on ``conn`` (the connection holding the lease) and
        returns the OK payload; raises the relay's refusal (412: :class:`LeaseLostError`)."""
        job_id: bytes = payload["job"]
        if conn is not self._conn or conn.closed.is_set() or conn.ws.state is not websockets.protocol.State.OPEN:
            raise LeaseLostError(
                "lease-lost: the connection that held the lease is gone (leases do not survive a disconnect)",
                code=412,
                event_id=job_id,
                sub_id=payload.get("sub_id"),
                local=True,
            )
        future: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        self._job_pending.setdefault(job_id, collections.deque()).append(future)
        conn.write(_pack(frame_type, payload))
        return await future

    async def _send(self, data: bytes) -> _Connection:
        conn = await self._connection()
        conn.write(data)
        return conn

    async def close(self) -> None:
        """Closes the connection; pending publishes fail, subscriptions end."""
        self._closed = True
        conn = self._conn
        for sub in list(self._subs.values()):
            sub._finish(ConnectionClosedError("the Relay was closed"))
        if conn is not None:
            await conn.ws.close()
            if conn.reader is not None:
                try:
                    await asyncio.wait_for(conn.reader, 5)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    conn.reader.cancel()
        self._fail_pending(ConnectionClosedError("the Relay was closed"))

    async def __aenter__(self) -> "Relay":
        await self._connection()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- publishing ---------------------------------------------------------------------

    def sign(
        self,
        kind: int,
        content: Union[bytes, str] = b"",
        tags: Optional[TagsInput] = None,
        *,
        expires_in: Optional[Union[int, float, timedelta]] = None,
        created_at: Optional[int] = None,
    ) -> Event:
        """Builds and signs an event with this connection's key (checked against the
        relay's limits; raises before anything is sent)."""
        tag_list = normalize_tags(tags)
        if expires_in is not None:
            seconds = _seconds(expires_in)
            if seconds < 0:
                raise InvalidError("expires_in must not be negative", local=True)
            tag_list.append(("expires_at", str(int(time.time()) + math.ceil(seconds))))
        return Event.sign(
            self.key, kind=kind, content=content, tags=tag_list, created_at=created_at, limits=self.limits
        )

    async def publish(
        self,
        kind: int,
        content: Union[bytes, str] = b"",
        tags: Optional[TagsInput] = None,
        *,
        expires_in: Optional[Union[int, float, timedelta]] = None,
        created_at: Optional[int] = None,
        retries: Optional[int] = None,
    ) -> PublishResult:
        """Signs and publishes an event; returns its id and seq once the relay has
        stored it (spec §8). ``tags`` are ``(name, value, ...)`` sequences;
        ``expires_in`` (seconds or a timedelta) adds an ``expires_at`` tag.

        A duplicate (409) is success with ``duplicate=True``. 429 and 503 are retried
        up to ``retries`` times (default: the Relay's ``max_retries``), waiting at least
        the relay's ``retry_after_ms``, else backing off exponentially with jitter.
        Other refusals raise the :class:`AxonError` subclass for their code."""
        event = self.sign(kind, content, tags, expires_in=expires_in, created_at=created_at)
        return await self.publish_event(event, retries=retries)

    async def publish_event(self, event: Event, *, retries: Optional[int] = None) -> PublishResult:
        """Publishes an already signed event (see :meth:`publish`)."""
        return await self._publish_event(event, retries=retries)

    async def _publish_event(
        self, event: Event, *, retries: Optional[int] = None, ack: Optional[Dict[str, Any]] = None
    ) -> PublishResult:
        if not isinstance(event, Event):
            raise TypeError(f"publish_event needs an axon.Event, got {type(event).__name__}")
        frame: Dict[str, Any] = {"event": event.to_wire()}
        if ack is not None:
            frame["ack"] = ack
        data = _pack(PUBLISH, frame)
        if len(data) > self.limits.max_frame_bytes:
            raise TooLargeError(
                f"the PUBLISH frame is {len(data)} bytes, the relay's frame limit is {self.limits.max_frame_bytes}",
                local=True,
            )
        budget = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            try:
                seq = await self._publish_once(event.id, data)
                return PublishResult(event.id, seq or 0, False, attempt)
            except DuplicateError as error:
                return await self._duplicate(event, error, attempt)
            except (RateLimitedError, UnavailableError) as error:
                if attempt >= budget or self._closed:
                    raise
                delay = _backoff(attempt, 0.1, 10.0)
                if error.retry_after_ms is not None:
                    delay = error.retry_after_ms / 1000 + random.uniform(0, 0.02)
                log.info("axon: publish got %s; retrying in %.3f s", error.code, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _publish_once(self, event_id: bytes, data: bytes) -> Optional[int]:
        for attempt in range(2):
            conn = await self._connection()
            if conn.ws.state is not websockets.protocol.State.OPEN:
                # closing: the frame would never be answered; wait for the reader, reconnect
                await conn.closed.wait()
                if attempt == 0:
                    continue
                raise _copy_error(conn.error or ConnectionClosedError("the connection was lost"))
            future: "asyncio.Future[Optional[int]]" = asyncio.get_running_loop().create_future()
            self._pending.setdefault(event_id, collections.deque()).append(future)
            conn.write(data)
            return await future
        raise ConnectionClosedError("the connection was lost")  # pragma: no cover

    async def _duplicate(self, event: Event, error: DuplicateError, attempt: int) -> PublishResult:
        """A 409: the stored seq is looked up; an admin 409 for an event that is not
        stored is a refusal (e.g. revoking a relay.yaml key) and is raised."""
        seq: Optional[int] = None
        try:
            async with self._lookups:
                found = await asyncio.wait_for(self.query([{"ids": [event.id], "limit": 1}]), self.timeout)
            seq = next((e.seq for e in found if e.id == event.id), None)
        except (AxonError, asyncio.TimeoutError):
            seq = None
        if seq is None and 9000 <= event.kind <= 9099 and "already stored" not in error.message:
            raise error
        return PublishResult(event.id, seq or 0, True, attempt)

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(
        self,
        filters: Union[Filter, Sequence[Filter]],
        after_seq: Optional[int] = None,
        resume: bool = True,
    ) -> "Subscription":
        """A subscription (spec §9): iterate it with ``async for`` to get the stored
        events, :data:`END_OF_STORED` once, then live events (each an :class:`Event`
        with ``.seq``). With ``after_seq`` it replays every stored match with a higher
        seq, oldest first. With ``resume=True`` it survives disconnects and overflows:
        it reconnects with exponential backoff and jitter (honouring ``retry_after_ms``)
        and resubscribes with ``after_seq``, never yielding an event twice or skipping
        one. Filters are checked before anything is sent."""
        wire = _encode_filters(filters, self.limits)
        if after_seq is not None:
            if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
                raise InvalidError("after_seq must be a non-negative int", local=True)
        return Subscription(self, wire, after_seq, resume)

    async def query(
        self,
        filters: Union[Filter, Sequence[Filter]],
        after_seq: Optional[int] = None,
        *,
        timeout: Optional[float] = 30.0,
    ) -> List[Event]:
        """The stored events matching ``filters`` (up to EOSE): newest first, or, with
        ``after_seq``, every match with a higher seq, oldest first."""
        sub = self.subscribe(filters, after_seq=after_seq, resume=False)
        events: List[Event] = []

        async def collect() -> None:
            async for item in sub:
                if item is END_OF_STORED:
                    return
                assert isinstance(item, Event)
                events.append(item)

        try:
            await asyncio.wait_for(collect(), timeout)
        except asyncio.TimeoutError:
            raise ConnectionClosedError(f"no EOSE from the relay within {timeout} s") from None
        finally:
            await sub.close()
        return events

    # -- job queues (spec §14) ------------------------------------------------------------

    def jobs(
        self,
        group: str,
        kinds: Union[int, Sequence[int]],
        max_in_flight: int = 1,
        lease_secs: int = 60,
        filters: Optional[Union[Filter, Sequence[Filter]]] = None,
        after_seq: Optional[int] = None,
    ) -> "JobQueue":
        """Joins the job queue ``group`` as a worker: ``async for job in
        relay.jobs("summarize", 5000):`` yields :class:`axon.Job` objects, each held
        under a lease of ``lease_secs`` (1..=3600), at most ``max_in_flight`` (1..=256)
        unfinished at once. ``kinds`` (5000..=5999) are added to every filter of
        ``filters`` (default one filter: just those kinds). ``after_seq`` applies only
        when the group is new: its queue starts after that seq. Offers to a dropped
        connection are lost with it; the queue reconnects and subscribes again."""
        from .jobs import JobQueue

        group_bytes = group.encode() if isinstance(group, str) else b""
        if not isinstance(group, str) or not 1 <= len(group_bytes) <= 64:
            raise InvalidError("group must be a str of 1..=64 bytes", local=True)
        kind_list = [kinds] if isinstance(kinds, int) else list(kinds)
        if not kind_list:
            raise InvalidError("name at least one job kind (5000..=5999)", local=True)
        for kind in kind_list:
            if isinstance(kind, bool) or not isinstance(kind, int) or not 5000 <= kind <= 5999:
                raise InvalidError(f"job kinds are 5000..=5999, got {kind!r}", local=True)
        for name, value, high in (("max_in_flight", max_in_flight, 256), ("lease_secs", lease_secs, 3600)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise InvalidError(f"{name} must be an int in 1..={high}, got {value!r}", local=True)
        if after_seq is not None and (isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0):
            raise InvalidError("after_seq must be a non-negative int", local=True)
        base: List[Filter]
        if filters is None:
            base = [{}]
        elif isinstance(filters, Mapping):
            base = [filters]
        else:
            base = list(filters)
        merged = [{**dict(f), "kinds": kind_list} for f in base]
        wire = _encode_filters(merged, self.limits)
        return JobQueue(self, group, wire, lease_secs, max_in_flight, after_seq)

    async def work(
        self,
        group: str,
        kinds: Union[int, Sequence[int]],
        handler: "Handler",
        *,
        concurrency: int = 1,
        lease_secs: int = 60,
        filters: Optional[Union[Filter, Sequence[Filter]]] = None,
        after_seq: Optional[int] = None,
        max_jobs: Optional[int] = None,
        backoff: Tuple[float, float] = (1.0, 300.0),
        extend_every: Optional[float] = None,
    ) -> int:
        """Runs ``await handler(job)`` for every job of ``group`` (see :meth:`jobs`),
        up to ``concurrency`` at once. While a handler runs its lease is extended every
        ``extend_every`` seconds (default ``lease_secs / 3``). The handler's return
        value (bytes or str) is published as the result with :meth:`axon.Job.complete`
        (``None``: the job is ACKed without a result; a handler may also settle the job
        itself). A handler that raises gives the job back (NACK) with a delay of
        ``backoff[0] * 2^(attempt-1)`` seconds, at most ``backoff[1]``. A result whose
        lease was lost is dropped (logged). Runs until cancelled, or returns the number
        of jobs handled after ``max_jobs``."""
        from .jobs import run_worker

        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 256:
            raise InvalidError("concurrency must be an int in 1..=256", local=True)
        queue = self.jobs(group, kinds, concurrency, lease_secs, filters, after_seq)
        return await run_worker(
            queue, handler, concurrency=concurrency, max_jobs=max_jobs, backoff=backoff, extend_every=extend_every
        )

    async def request(
        self,
        kind: int,
        content: Union[bytes, str] = b"",
        tags: Optional[TagsInput] = None,
        *,
        timeout: Optional[float] = 30.0,
        result_kind: Optional[int] = None,
        expires_in: Optional[Union[int, float, timedelta]] = None,
    ) -> Event:
        """Publishes a job request (kind 5000..=5999) and returns its first result: an
        event of ``result_kind`` (default ``kind + 1000``) with an ``e`` tag naming the
        job id. The result subscription is made before the request is published, so the
        result cannot be missed. Raises ``asyncio.TimeoutError`` after ``timeout``."""
        if isinstance(kind, bool) or not isinstance(kind, int) or not 5000 <= kind <= 5999:
            raise InvalidError(f"a job request kind is 5000..=5999, got {kind!r}", local=True)
        want = kind + 1000 if result_kind is None else result_kind
        event = self.sign(kind, content, tags, expires_in=expires_in)
        job_hex = event.id.hex()
        sub = self.subscribe([{"kinds": [want], "tags": {"e": [job_hex]}}])

        async def wait() -> Event:
            published = False
            async for item in sub:
                if item is END_OF_STORED:
                    if not published:
                        await self.publish_event(event)
                        published = True
                    continue
                assert isinstance(item, Event)
                if item.kind == want and job_hex in item.tag_values("e"):
                    return item
            raise ConnectionClosedError("the result subscription ended")  # pragma: no cover

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(f"no result for job {job_hex} within {timeout} s") from None
        finally:
            await sub.close()

    def _new_sub_id(self) -> str:
        return f"py{next(self._sub_counter)}"

    # -- direct messages --------------------------------------------------------------------

    async def send_dm(
        self,
        recipient: Union[str, bytes, Key],
        plaintext: Union[bytes, str],
        *,
        kind: int = _dm.KIND_DM,
        tags: Optional[TagsInput] = None,
        expires_in: Optional[Union[int, float, timedelta]] = None,
    ) -> PublishResult:
        """Encrypts ``plaintext`` to ``recipient`` (hex, bytes or Key) and publishes it as
        a DM (kind 2000, a ``p`` tag naming the recipient; spec §12)."""
        recipient_key = parse_pubkey(recipient, "recipient")
        if isinstance(plaintext, str):
            plaintext = plaintext.encode()
        if not 2000 <= kind <= 2999:
            raise InvalidError(f"a DM kind is 2000..=2999, got {kind}", local=True)
        content = _dm.seal(self.key, recipient_key, plaintext)
        all_tags = [("p", recipient_key.hex())] + normalize_tags(tags)
        return await self.publish(kind, content, all_tags, expires_in=expires_in)

    def open_dm(self, event: Event) -> bytes:
        """Decrypts a DM event with this connection's key."""
        return _dm.open_dm(self.key, event)

    # -- administration -----------------------------------------------------------------

    async def allow(self, *pubkeys: Union[str, bytes, Key]) -> PublishResult:
        """Admins: allows the keys (one kind 9000 ALLOW event with a ``p`` tag each)."""
        return await self._admin(KIND_ALLOW, pubkeys)

    async def revoke(self, *pubkeys: Union[str, bytes, Key]) -> PublishResult:
        """Admins: revokes the keys (kind 9001 REVOKE); their connections are closed.
        Revoking a relay.yaml key raises :class:`DuplicateError` (409)."""
        return await self._admin(KIND_REVOKE, pubkeys)

    async def _admin(self, kind: int, pubkeys: Sequence[Union[str, bytes, Key]]) -> PublishResult:
        if not pubkeys:
            raise InvalidError("name at least one public key", local=True)
        keys: List[str] = []
        for pubkey in pubkeys:
            value = parse_pubkey(pubkey).hex()
            if value not in keys:
                keys.append(value)
        return await self.publish(kind, b"", [("p", value) for value in keys])

    async def admin_log(self) -> List[Event]:
        """Admins: every ALLOW/REVOKE event, oldest first (empty for non-admins)."""
        return await self.query([{"kinds": [KIND_ALLOW, KIND_REVOKE]}], after_seq=0)

    async def allowlist(self) -> List[str]:
        """Admins: the keys allowed at run time (hex), replayed from the admin log in seq
        order, in the order they were allowed. Keys in relay.yaml are not listed."""
        allowed: Dict[str, None] = {}
        for event in await self.admin_log():
            for value in event.tag_values("p"):
                if event.kind == KIND_ALLOW:
                    allowed.setdefault(value, None)
                elif event.kind == KIND_REVOKE:
                    allowed.pop(value, None)
        return list(allowed)


def _copy_error(error: AxonError) -> AxonError:
    """A fresh exception object of the same type (one exception instance must not be
    raised in several tasks: tracebacks would pile up)."""
    if isinstance(error, ConnectionClosedError):
        return ConnectionClosedError(error.message, close_code=error.close_code)
    return type(error)(
        error.message,
        code=error.code,
        event_id=error.event_id,
        sub_id=error.sub_id,
        seq=error.seq,
        retry_after_ms=error.retry_after_ms,
    )


_Item = Tuple[str, Any, Optional[_Connection]]


class Subscription:
    """A subscription made by :meth:`Relay.subscribe`; iterate with ``async for``.

    Attributes: ``last_seq`` (highest seq yielded), ``reconnects`` and ``overflows``
    (how often it resumed), ``sub_id`` (the current wire sub_id). Call
    :meth:`close` (or leave ``async with``) to unsubscribe; breaking out of the loop
    also unsubscribes once the iterator is finalised."""

    def __init__(self, relay: Relay, filters: List[Dict[str, Any]], after_seq: Optional[int], resume: bool) -> None:
        self.relay = relay
        self.filters = filters
        self.after_seq = after_seq
        self.resume = resume
        self.last_seq: Optional[int] = None
        self.reconnects = 0
        self.overflows = 0
        self.sub_id: Optional[str] = None
        self._queue: "asyncio.Queue[_Item]" = asyncio.Queue()
        self._conn: Optional[_Connection] = None
        self._eose_yielded = False
        self._eose_this_round = False
        self._seen: Set[bytes] = set()  # ids yielded before the first EOSE (newest-first phase)
        self._resume_seq: Optional[int] = None  # from an overflow
        self._done: Optional[AxonError] = None
        self._closed = False
        self._interrupted: Optional[Tuple[AxonError, bool]] = None  # a resubscribe is due
        self._live_only = all(f.get("limit") == 0 for f in filters)

    # -- called by the Relay's reader ----------------------------------------------

    def _on_event(self, payload: Dict[str, Any]) -> None:
        seq = payload.get("seq")
        try:
            event = Event.from_wire(payload.get("event"), seq if isinstance(seq, int) else None)
            if self.relay.verify_events:
                event.validate(limits=None)
        except AxonError as error:
            self._queue.put_nowait(("error", InvalidError(f"the relay sent an invalid event: {error.message}"), None))
            return
        self._queue.put_nowait(("event", event, None))

    def _on_eose(self) -> None:
        self._queue.put_nowait(("eose", None, None))

    def _on_error(self, error: AxonError) -> None:
        self._queue.put_nowait(("error", error, None))

    def _on_disconnect(self, conn: _Connection, error: AxonError) -> None:
        if conn is self._conn:
            self._queue.put_nowait(("disconnect", error, conn))

    def _finish(self, error: AxonError) -> None:
        self._queue.put_nowait(("closed", error, None))

    # -- the consumer side ----------------------------------------------------------

    def _request_after_seq(self) -> Optional[int]:
        """after_seq for the next SUBSCRIBE (None: the original request again)."""
        candidates = [s for s in (self.after_seq, self.last_seq, self._resume_seq) if s is not None]
        if self.after_seq is not None or self._resume_seq is not None:
            # replay mode, or an overflow's resume point: every match up to it was delivered
            return max(candidates)
        if not self._eose_yielded:
            return None  # still in the newest-first stored phase: repeat, skip seen ids
        if self.last_seq is not None or self._resume_seq is not None:
            return max(candidates)
        if self._live_only:
            return None
        return 0  # nothing matched when the stored phase ended: everything matching now is new

    async def _start(self) -> None:
        conn = await self.relay._connection()
        if self.sub_id is not None:
            self.relay._subs.pop(self.sub_id, None)
        self.sub_id = self.relay._new_sub_id()
        payload: Dict[str, Any] = {"sub_id": self.sub_id, "filters": self.filters}
        after = self._request_after_seq()
        if after is not None:
            payload["after_seq"] = after
        self._conn = conn
        self._eose_this_round = False
        self.relay._subs[self.sub_id] = self
        await self.relay._send(_pack(SUBSCRIBE, payload))

    def _skip(self, event: Event) -> bool:
        seq = event.seq or 0
        if seq == 0:
            return False  # ephemeral: live only, cannot repeat
        if self.last_seq is not None and seq <= self.last_seq and (self._eose_yielded or self.after_seq is not None):
            return True
        return event.id in self._seen

    def _accept(self, event: Event) -> None:
        seq = event.seq or 0
        if seq > 0:
            self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)
        if not self._eose_yielded and self.after_seq is None:
            self._seen.add(event.id)

    async def _recover(self, error: AxonError, overflow: bool) -> None:
        """Resubscribes (reconnecting if needed) with backoff; raises when it may not."""
        attempt = 0
        hint = error.retry_after_ms
        while True:
            if self._closed or self.relay._closed:
                raise ConnectionClosedError("the subscription was closed")
            if overflow and attempt == 0 and hint is None:
                delay = 0.0
            else:
                delay = _backoff(attempt, *self.relay.reconnect_delay)
                if hint is not None:
                    delay = max(delay, hint / 1000)
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._start()
                return
            except (AuthError, ForbiddenError):
                raise
            except (ConnectionClosedError, UnavailableError, RateLimitedError) as retry:
                log.info("axon: resubscribe failed (%s); retrying", retry)
                hint = retry.retry_after_ms
                attempt += 1

    async def next(self, timeout: Optional[float] = None) -> Union[Event, EndOfStored]:
        """The next item (like ``anext``), optionally with a timeout (raises
        ``asyncio.TimeoutError``)."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Union[Event, EndOfStored]:
        if self._done is not None:
            raise _copy_error(self._done)
        if self.sub_id is None:
            await self._start()
        while True:
            if self._interrupted is not None:
                # a resubscribe is due (also when an earlier next() timed out during one)
                cause, overflow = self._interrupted
                try:
                    await self._recover(cause, overflow)
                except (AuthError, ForbiddenError) as refused:
                    self._done = refused
                    raise
                self._interrupted = None
            kind, value, conn = await self._queue.get()
            if kind == "event":
                if self._skip(value):
                    continue
                self._accept(value)
                return value  # type: ignore[no-any-return]
            if kind == "eose":
                self._eose_this_round = True
                if not self._eose_yielded:
                    self._eose_yielded = True
                    self._seen.clear()
                    return END_OF_STORED
                continue
            if kind == "closed":
                self._done = value
                raise _copy_error(value)
            if kind == "disconnect" and conn is not self._conn:
                continue
            error: AxonError = value
            fatal = isinstance(error, (AuthError, ForbiddenError)) or (
                kind == "error" and not isinstance(error, UnavailableError)
            )
            if not self.resume or fatal or self._closed:
                self._done = error
                self.relay._subs.pop(self.sub_id or "", None)
                raise _copy_error(error)
            if kind == "error":
                self.overflows += 1
                if error.seq is not None:
                    self._resume_seq = max(self._resume_seq or 0, error.seq)
                self.relay._subs.pop(self.sub_id or "", None)
                self._interrupted = (error, True)
            else:
                self.reconnects += 1
                self._interrupted = (error, False)

    def __aiter__(self) -> AsyncIterator[Union[Event, EndOfStored]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Union[Event, EndOfStored]]:
        try:
            while True:
                try:
                    item = await self._next()
                except ConnectionClosedError:
                    if self._closed:
                        return
                    raise
                yield item
        finally:
            await self.close()

    async def close(self) -> None:
        """Unsubscribes (no-op when already closed)."""
        if self._closed:
            return
        self._closed = True
        sub_id = self.sub_id
        if sub_id is not None:
            self.relay._subs.pop(sub_id, None)
            conn = self.relay._conn
            if conn is not None and not conn.closed.is_set() and conn is self._conn:
                conn.write(_pack(UNSUBSCRIBE, {"sub_id": sub_id}))

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class connect:
    """``async with axon.connect(url, key) as relay:`` — or ``relay = await
    axon.connect(url, key)`` (then ``await relay.close()``).

    Opens the WebSocket, answers the CHALLENGE with AUTH (``relay_url`` is read from
    the relay's info document, ``GET /info``, unless given) and returns a
    :class:`Relay`. Raises :class:`AuthError` (401: wrong relay_url),
    :class:`ForbiddenError` (403: key not allowed) or :class:`ConnectionClosedError`.

    Options: ``timeout`` (connect and handshake, seconds), ``verify_events`` (check
    every received event's id and signature; the relay already did), ``reconnect_delay``
    ((base, cap) seconds of the resume backoff), ``max_retries`` (429/503 retries of a
    publish), ``ping_interval`` (client pings; the library also answers the relay's)."""

    def __init__(
        self,
        url: str,
        key: Key,
        *,
        relay_url: Optional[str] = None,
        timeout: float = 10.0,
        verify_events: bool = False,
        reconnect_delay: Tuple[float, float] = (0.25, 30.0),
        max_retries: int = 5,
        ping_interval: Optional[float] = 20.0,
    ) -> None:
        self._relay = Relay(
            url,
            key,
            relay_url=relay_url,
            timeout=timeout,
            verify_events=verify_events,
            reconnect_delay=reconnect_delay,
            max_retries=max_retries,
            ping_interval=ping_interval,
        )

    async def _open(self) -> Relay:
        await self._relay._connection()
        return self._relay

    def __await__(self) -> Any:
        return self._open().__await__()

    async def __aenter__(self) -> Relay:
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        await self._relay.close()
