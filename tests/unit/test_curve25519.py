"""The public key records hold: RFC 7748's vectors and ``wg pubkey``."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

import pytest

from wg_pod_hook.model.curve25519 import public_key, x25519


def test_rfc7748_scalar_multiplication() -> None:
    """Section 5.2, first vector (the u-coordinate's top bit masked)."""
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytearray.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    u[31] &= 127
    expected = "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    assert x25519(scalar, int.from_bytes(u, "little")).hex() == expected


def test_rfc7748_key_pairs() -> None:
    """Section 6.1: Alice's and Bob's public keys."""
    pairs = {
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a": (
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        ),
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb": (
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
        ),
    }
    for private, public in pairs.items():
        assert public_key(bytes.fromhex(private)).hex() == public


def test_agrees_with_wg_pubkey() -> None:
    wg = shutil.which("wg")
    if wg is None:
        pytest.fail("wg (wireguard-tools) missing: run scripts/setup")
    for _ in range(5):
        private = os.urandom(32)
        text = base64.b64encode(private).decode()
        done = subprocess.run(
            [wg, "pubkey"], input=text, capture_output=True, text=True, check=True
        )
        assert base64.b64encode(public_key(private)).decode() == done.stdout.strip()
