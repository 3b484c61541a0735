"""Typed errors. Every error the relay answers becomes an :class:`AxonError` subclass
chosen by its code (spec §8); programs act on ``.code``, the message is for humans."""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "AxonError",
    "InvalidError",
    "AuthError",
    "ForbiddenError",
    "DuplicateError",
    "ExpiredError",
    "LeaseLostError",
    "TooLargeError",
    "RateLimitedError",
    "StorageError",
    "UnavailableError",
    "ConnectionClosedError",
    "error_for_code",
]


class AxonError(Exception):
    """An error with the spec's numeric ``code`` (0 for connection-level failures that
    carry no relay code) and a human ``message``.

    ``event_id`` (bytes), ``sub_id`` and ``seq`` are set when the relay's ERROR frame
    carried them; ``retry_after_ms`` is the relay's retry hint (spec §15), if given.
    ``local`` is True when the client refused the input before sending anything.
    """

    code: int = 0

    def __init__(
        self,
        message: str,
        *,
        code: Optional[int] = None,
        event_id: Optional[bytes] = None,
        sub_id: Optional[str] = None,
        seq: Optional[int] = None,
        retry_after_ms: Optional[int] = None,
        local: bool = False,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message: str = message
        self.event_id: Optional[bytes] = event_id
        self.sub_id: Optional[str] = sub_id
        self.seq: Optional[int] = seq
        self.retry_after_ms: Optional[int] = retry_after_ms
        self.local: bool = local

    def __str__(self) -> str:
        return f"{self.code} {self.message}" if self.code else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class InvalidError(AxonError, ValueError):
    """400: the frame, event or filter breaks a rule (also raised locally for bad input)."""

    code = 400


class AuthError(AxonError):
    """401: not authenticated, or the AUTH signature is bad (wrong relay_url or key)."""

    code = 401


class ForbiddenError(AxonError):
    """403: the key is not allowed (not on the allowlist, revoked, or not an admin)."""

    code = 403


class DuplicateError(AxonError):
    """409: a duplicate, or an admin change that conflicts with relay.yaml.

    :meth:`axon.Relay.publish` reports a plain duplicate as success
    (``PublishResult.duplicate``); this is raised only when the 409 is a refusal."""

    code = 409


class ExpiredError(AxonError):
    """410: the event's ``expires_at`` is already past."""

    code = 410


class LeaseLostError(AxonError):
    """412: the job's lease is no longer held by this worker (spec §14): it expired and
    the job was offered again, it was NACKed, or the subscription (or connection) that
    held it ended. ``event_id`` is the job id (for an ACK/NACK/EXTEND) or the result's
    id (for a completing publish, which was then not stored)."""

    code = 412


class TooLargeError(AxonError, ValueError):
    """413: the content (or frame) is too large for the relay."""

    code = 413


class RateLimitedError(AxonError):
    """429: rate limited; ``retry_after_ms`` says when the next event is accepted."""

    code = 429


class StorageError(AxonError):
    """500: the relay failed to store the event (nothing was stored)."""

    code = 500


class UnavailableError(AxonError):
    """503: the relay is overloaded or shutting down, or a subscription overflowed
    (then ``sub_id`` names it and ``seq`` is the resume point for ``after_seq``)."""

    code = 503

    @property
    def resume_seq(self) -> Optional[int]:
        """The §9.4 resume point of an overflowed subscription (same as ``seq``)."""
        return self.seq


class ConnectionClosedError(AxonError):
    """The connection was lost or closed (code 0: no relay error code).

    ``close_code`` is the WebSocket close code, when one was received."""

    code = 0

    def __init__(self, message: str, *, close_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.close_code: Optional[int] = close_code


_BY_CODE: Dict[int, Type[AxonError]] = {
    400: InvalidError,
    401: AuthError,
    403: ForbiddenError,
    409: DuplicateError,
    410: ExpiredError,
    412: LeaseLostError,
    413: TooLargeError,
    429: RateLimitedError,
    500: StorageError,
    503: UnavailableError,
}


def error_for_code(
    code: int,
    message: str,
    *,
    event_id: Optional[bytes] = None,
    sub_id: Optional[str] = None,
    seq: Optional[int] = None,
    retry_after_ms: Optional[int] = None,
) -> AxonError:
    """The :class:`AxonError` subclass for ``code`` (plain AxonError for other codes)."""
    cls = _BY_CODE.get(code, AxonError)
    return cls(message, code=code, event_id=event_id, sub_id=sub_id, seq=seq, retry_after_ms=retry_after_ms)
