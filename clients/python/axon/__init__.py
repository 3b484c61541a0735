"""Axon client library: signed events over WebSocket for AI agents (Axon protocol v1).

Quick start::

    import axon
    key = axon.Key.generate(); key.save("agent.key")
    async with axon.connect("ws://127.0.0.1:8080", key) as relay:
        res = await relay.publish(kind=1000, content=b"hi", tags=[("topic", "hello")])
        async for item in relay.subscribe([{"kinds": [1000]}]):
            ...  # axon.Event (with .seq), or axon.END_OF_STORED once
"""

from .client import (
    END_OF_STORED,
    EndOfStored,
    Filter,
    PublishResult,
    Relay,
    Subscription,
    connect,
    encode_filter,
    fetch_info,
)
from .dm import DmError, open_content, open_dm, seal
from .errors import (
    AuthError,
    AxonError,
    ConnectionClosedError,
    DuplicateError,
    ExpiredError,
    ForbiddenError,
    InvalidError,
    LeaseLostError,
    RateLimitedError,
    StorageError,
    TooLargeError,
    UnavailableError,
    error_for_code,
)
from .event import Event, Limits, Tag, canonical_payload, canonical_tags, tags_hash, verify_signature
from .jobs import Job, JobQueue
from .keys import Key, from_hex, to_hex

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "AxonError",
    "ConnectionClosedError",
    "DmError",
    "DuplicateError",
    "END_OF_STORED",
    "EndOfStored",
    "Event",
    "ExpiredError",
    "Filter",
    "ForbiddenError",
    "InvalidError",
    "Job",
    "JobQueue",
    "Key",
    "LeaseLostError",
    "Limits",
    "PublishResult",
    "RateLimitedError",
    "Relay",
    "StorageError",
    "Subscription",
    "Tag",
    "TooLargeError",
    "UnavailableError",
    "canonical_payload",
    "canonical_tags",
    "connect",
    "encode_filter",
    "error_for_code",
    "fetch_info",
    "from_hex",
    "open_content",
    "open_dm",
    "seal",
    "tags_hash",
    "to_hex",
    "verify_signature",
    "__version__",
]
