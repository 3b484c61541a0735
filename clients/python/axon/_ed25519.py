"""Exact Ed25519 signature check for the Axon v1 signature rule (spec §3, amended).

libsodium's ``crypto_sign_verify_detached`` is the fast path: whatever it accepts is
valid by the rule (it checks S < ℓ, canonical and non-small-order A, non-small-order R,
and the *cofactorless* equation with R compared byte for byte, which implies every
clause of the rule). It rejects some signatures the rule accepts (R with a torsion
component), so when it says no, :func:`check` decides with pure-Python edwards25519
arithmetic that implements the rule clause by clause.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Tuple

import nacl.bindings
import nacl.exceptions

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

# Extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z.
Point = Tuple[int, int, int, int]

IDENTITY: Point = (0, 1, 1, 0)


def _recover_x(y: int, sign: int) -> Optional[int]:
    """x for y on the curve with the given sign bit, or None if there is no such point
    or the encoding is non-canonical (x = 0 with the sign bit set)."""
    y2 = y * y % P
    u = (y2 - 1) % P
    v = (D * y2 + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    vx2 = v * x * x % P
    if vx2 == u:
        pass
    elif vx2 == (-u) % P:
        x = x * SQRT_M1 % P
    else:
        return None
    if x == 0 and sign == 1:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def decode_point(encoded: bytes) -> Tuple[Optional[Point], str]:
    """Decodes a 32-byte encoding. Returns (point, "") or (None, reason)."""
    if len(encoded) != 32:
        return None, "not 32 bytes"
    value = int.from_bytes(encoded, "little")
    sign = value >> 255
    y = value & ((1 << 255) - 1)
    if y >= P:
        return None, "non-canonical (y >= p)"
    x = _recover_x(y, sign)
    if x is None:
        y2 = y * y % P
        u = (y2 - 1) % P
        if u == 0 and sign == 1:
            return None, "non-canonical (x = 0 with the sign bit set)"
        return None, "not a curve point"
    return (x, y, 1, x * y % P), ""


def encode_point(point: Point) -> bytes:
    x, y, z, _ = point
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def add(p1: Point, p2: Point) -> Point:
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * D * t1 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def negate(point: Point) -> Point:
    x, y, z, t = point
    return ((-x) % P, y, z, (-t) % P)


def double(point: Point) -> Point:
    return add(point, point)


def multiply(scalar: int, point: Point) -> Point:
    result = IDENTITY
    addend = point
    while scalar > 0:
        if scalar & 1:
            result = add(result, addend)
        addend = double(addend)
        scalar >>= 1
    return result


def is_identity(point: Point) -> bool:
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def is_small_order(point: Point) -> bool:
    return is_identity(multiply(8, point))


_BY = 4 * pow(5, P - 2, P) % P
_BX = _recover_x(_BY, 0)
assert _BX is not None
BASE: Point = (_BX, _BY, 1, _BX * _BY % P)


def rule_violation(pubkey: bytes, message: bytes, sig: bytes) -> Optional[str]:
    """The first clause of the signature rule that fails, or None if the signature is
    valid. Pure Python; exact (no fast path)."""
    if len(pubkey) != 32 or len(sig) != 64:
        return "wrong length"
    r_bytes, s_bytes = sig[:32], sig[32:]
    s = int.from_bytes(s_bytes, "little")
    if s >= L:
        return "S is not below the group order"
    a_point, reason = decode_point(pubkey)
    if a_point is None:
        return f"public key: {reason}"
    r_point, reason = decode_point(r_bytes)
    if r_point is None:
        return f"R: {reason}"
    if is_small_order(a_point):
        return "public key: small order"
    if is_small_order(r_point):
        return "R: small order"
    k = int.from_bytes(hashlib.sha512(r_bytes + pubkey + message).digest(), "little") % L
    check = add(add(multiply(s, BASE), negate(r_point)), negate(multiply(k, a_point)))
    if not is_identity(multiply(8, check)):
        return "the cofactored equation does not hold"
    return None


def check(pubkey: bytes, message: bytes, sig: bytes) -> bool:
    """True iff ``sig`` is valid by the Axon signature rule (spec §3, amended)."""
    if len(pubkey) != 32 or len(sig) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(sig + message, pubkey)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        pass
    return rule_violation(pubkey, message, sig) is None
