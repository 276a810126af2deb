"""A WireGuard public key from its private key (X25519, RFC 7748).

wg-pod compares tunnels by their public keys (a private key in use twice
towards one peer makes both tunnels flap), so that records can say which
key a tunnel uses without holding anything secret.  The standard library
has no X25519 and the ``cryptography`` package costs some 30-60 ms of import
on every container start; this is RFC 7748's ladder, checked against its
test vectors and ``wg pubkey``.  It runs once per start on the key of the
config being set up.
"""

from __future__ import annotations

_P = 2**255 - 19
_A24 = 121665
_BASE_POINT = 9


def _clamp(scalar: bytes) -> int:
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return int.from_bytes(k, "little")


def x25519(scalar: bytes, u_coordinate: int) -> bytes:
    """RFC 7748 section 5: the scalar multiplication on the Montgomery curve."""
    if len(scalar) != 32:
        raise ValueError("an X25519 scalar is 32 bytes")
    k = _clamp(scalar)
    x1 = u_coordinate % _P
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        if swap ^ bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a % _P, b * b % _P
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a % _P, c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def public_key(private_key: bytes) -> bytes:
    """What ``wg pubkey`` prints for ``private_key``, as raw bytes."""
    return x25519(private_key, _BASE_POINT)
