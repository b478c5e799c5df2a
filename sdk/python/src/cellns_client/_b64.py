"""Strict base64url (RFC 4648 §5), as JWS uses it."""

from __future__ import annotations

import base64
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*\Z")


def encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """Decodes unpadded base64url, refusing anything a strict decoder would:
    other characters, padding, an impossible length, and unused trailing bits
    that are not zero (so one byte string has exactly one encoding, and a
    signature cannot be re-encoded into a "different" valid token).

    The standard library's decoder silently skips characters outside the
    alphabet, hence the explicit checks.
    """
    if not _ALPHABET.match(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if encode(raw) != text:
        raise ValueError("base64url with non-zero trailing bits")
    return raw


def decode_padding_optional(text: str) -> bytes:
    """As :func:`decode`, also accepting the canonical `=` padding (some JWT
    libraries add it; clients reading claims tolerate it)."""
    stripped = text.rstrip("=")
    if stripped != text and len(text) - len(stripped) != -len(stripped) % 4:
        raise ValueError("base64url with wrong padding")
    return decode(stripped)
