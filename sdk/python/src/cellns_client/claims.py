"""Reading a token's routing claims **without verifying it** (clients).

SDKs hold no keys: the cell verifies the token, and a forged token gets a
client nowhere. The claims are still outsider-controlled input, so they are
checked before use: `cell` must be a hostname (it ends up in a URL), `tenant`
one DNS label, and `exp` after `iat` by at most 30 days.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple

from . import _b64

#: Largest token accepted, in bytes. cellns tokens are well under 1 KiB; the
#: bound keeps a hostile "token" from costing memory.
MAX_TOKEN_BYTES = 16384
#: Largest `iat`/`nbf`/`exp` accepted: 2^53 - 1, the largest integer every
#: JSON implementation (JavaScript's included) reads exactly.
MAX_NUMERIC_DATE = 2**53 - 1
#: Longest lifetime (``exp - iat``, seconds) a client accepts: 30 days. A
#: client keeps times as "received + lifetime"; a token claiming to live for
#: centuries is nonsense (cells accept a day by default).
MAX_TOKEN_LIFETIME = 30 * 86400


class ClaimsError(ValueError):
    """A token whose claims a client cannot use.

    ``kind`` is ``"not_jwt"`` (too long, or not three dot-separated parts),
    ``"payload"`` (not base64url JSON, a member name twice in an object, or
    a claim missing or of the wrong type) or ``"invalid"`` (a claim with a
    value a client must not use, a lifetime of more than 30 days).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class TokenClaims:
    """The claims a client routes by, read from a token it has not verified."""

    #: The tenant id (one DNS label, lowercase).
    tenant: str
    #: The hostname of the tenant's cell, lowercase, no trailing dot: where to connect.
    cell: str
    #: Issued at, Unix seconds (the issuer's clock).
    iat: int
    #: Expiry, Unix seconds (the issuer's clock).
    exp: int
    #: The map version the cell was taken from (for logs).
    map_version: str

    @property
    def lifetime(self) -> int:
        """The token's lifetime in seconds as the issuer set it (``exp - iat``)."""
        return self.exp - self.iat


def utf8_length(s: str) -> int:
    """Bytes of ``s`` in UTF-8, without encoding a string that is obviously
    longer than any token (every code point is at least one byte)."""
    if len(s) > MAX_TOKEN_BYTES:
        return len(s)
    return len(s.encode("utf-8", "surrogatepass"))


def is_numeric_date(value: object) -> bool:
    """A JSON integer in ``[0, 2^53 - 1]`` (``bool`` is not an integer here)."""
    return type(value) is int and 0 <= value <= MAX_NUMERIC_DATE


def _is_label(label: str) -> bool:
    return 0 < len(label) <= 63 and all(
        c.isascii() and (c.isalnum() or c in "-_") for c in label
    )


def is_hostname(name: str) -> bool:
    """A DNS hostname of plain ASCII labels (letters, digits, ``-``, ``_``),
    at most 253 bytes, without a trailing dot."""
    return 0 < len(name) <= 253 and all(_is_label(lbl) for lbl in name.split("."))


def canonical_host(name: str) -> str:
    """The one canonical form of a hostname, as in every cellns SDK: ASCII
    letters lowercased and ONE trailing dot removed (``a.example..`` becomes
    ``a.example.``, which is not a hostname, rather than ``a.example``)."""
    return _ascii_lower(name[:-1] if name.endswith(".") else name)


def _ascii_lower(s: str) -> str:
    # str.lower() would also fold non-ASCII letters (and change lengths):
    # DNS compares ASCII case-insensitively only.
    return s.translate(_LOWER)


_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


#: Deepest nesting of arrays and objects in a token's header or payload
#: (the outer object counts): the limit of Rust's serde_json, which the
#: other SDKs follow so that the three refuse the same documents.
MAX_JSON_DEPTH = 127
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _unique_members(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    obj: Dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise ValueError(f"member {name!r} appears twice in one object")
        obj[name] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:24]} is beyond a double's range")
    return value


def _finite_int(text: str) -> int:
    if math.isinf(float(text)):
        raise ValueError(f"number {text[:24]}... is beyond a double's range")
    return int(text)


def _depth(text: str) -> int:
    """How deep arrays and objects nest in JSON ``text`` (strings skipped)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper: no need to scan
    depth = deepest = 0
    for c in _STRING.sub("", text):
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def loads(text: str) -> Any:
    """``json.loads`` with the one JSON grammar of every cellns SDK (that of
    Rust's serde_json), else ValueError: no object with a member name twice,
    at any depth (parsers disagree on which copy wins; Python's keeps the
    last); no ``NaN`` or ``Infinity``; no number beyond a double's range; no
    unpaired surrogate escape; at most :data:`MAX_JSON_DEPTH` nested arrays
    and objects (deeper, Python's parser would raise RecursionError)."""
    if _depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"arrays and objects nested deeper than {MAX_JSON_DEPTH}")
    value = json.loads(
        text,
        object_pairs_hook=_unique_members,
        parse_constant=_no_constant,
        parse_float=_finite_float,
        parse_int=_finite_int,
    )
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string with an unpaired surrogate escape") from None
    return value


def decode_part(part: str, *, padding_optional: bool = False) -> Any:
    """The JSON value a base64url token part encodes (ValueError if none)."""
    raw = (
        _b64.decode_padding_optional(part) if padding_optional else _b64.decode(part)
    )
    return loads(raw.decode("utf-8"))


def read_claims(token: str) -> TokenClaims:
    """Reads the routing claims of ``token`` (a JWS compact serialisation)
    without verifying its signature: ``cell`` a hostname (canonical form),
    ``tenant`` one DNS label, ``exp`` after ``iat`` by at most
    :data:`MAX_TOKEN_LIFETIME`. Raises :class:`ClaimsError`."""
    if utf8_length(token) > MAX_TOKEN_BYTES:
        raise ClaimsError("not_jwt", f"not a JWT: longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ClaimsError("not_jwt", "not a JWT: not three parts separated by dots")
    try:
        payload = decode_part(parts[1], padding_optional=True)
    except (ValueError, UnicodeDecodeError) as e:
        raise ClaimsError("payload", f"token payload: not base64url JSON ({e})") from None
    if not isinstance(payload, dict):
        raise ClaimsError("payload", "token payload: not a JSON object")
    return _routing_claims(payload)


def _routing_claims(payload: Mapping[str, Any]) -> TokenClaims:
    for name in ("tenant", "cell", "map_version"):
        if not isinstance(payload.get(name), str):
            raise ClaimsError("payload", f"token payload: claim {name} missing or not a string")
    for name in ("iat", "exp"):
        if not is_numeric_date(payload.get(name)):
            raise ClaimsError(
                "payload",
                f"token payload: claim {name} missing or not an integer in [0, 2^53-1]",
            )
    cell = canonical_host(payload["cell"])
    if not is_hostname(cell):
        raise ClaimsError(
            "invalid",
            f"claim cell {payload['cell']!r}: not a hostname "
            "(ASCII letters, digits, '-', '_' and dots, at most 253 bytes)",
        )
    tenant = _ascii_lower(payload["tenant"])
    if not _is_label(tenant):
        raise ClaimsError("invalid", f"claim tenant {payload['tenant']!r}: not one DNS label")
    if payload["exp"] <= payload["iat"]:
        raise ClaimsError("invalid", "claim exp: not after iat, the token has no lifetime")
    if payload["exp"] - payload["iat"] > MAX_TOKEN_LIFETIME:
        raise ClaimsError(
            "invalid",
            f"token lifetime (exp - iat) of {payload['exp'] - payload['iat']} s is longer "
            f"than the {MAX_TOKEN_LIFETIME} s a client accepts",
        )
    return TokenClaims(
        tenant=tenant,
        cell=cell,
        iat=payload["iat"],
        exp=payload["exp"],
        map_version=payload["map_version"],
    )
