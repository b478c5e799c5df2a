"""Verifying tokens as a cell does (needs the ``verify`` extra: PyJWT[crypto]).

A cell builds one :class:`Verifier` for its own hostname from the JWKS URL
of cellns. The key set is fetched at start, cached as long as the answer's
``Cache-Control: max-age`` says (300 s without one), refetched when a token
names an unknown ``kid`` (at most once per ``refetch_interval``), and kept
when a refresh fails. Every failure has its own code, the same in the Rust,
Python and TypeScript verifiers (sdk/vectors/README.md):

``too_large``, ``malformed``, ``alg_none``, ``disallowed_algorithm``,
``unknown_kid``, ``bad_signature``, ``non_canonical_signature``, ``expired``,
``not_yet_valid``, ``issued_in_future``, ``lifetime_too_long``,
``wrong_issuer``, ``wrong_audience``, ``wrong_cell``, ``jwks_unavailable``.

Only EdDSA (Ed25519) and ES256 are accepted, decided from the header before
any key is used (``none`` and HMAC are refused: no algorithm confusion).
ES256 signatures must be in the low-S form cellns produces: PyJWT and most
ECDSA libraries accept the high-S twin of a valid signature, which would
let anyone mint a second encoding of a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from . import _b64
from .claims import MAX_TOKEN_BYTES, canonical_host, is_numeric_date, loads, utf8_length

try:
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        "cellns_client.verify needs PyJWT with its crypto extra: pip install 'cellns-client[verify]'"
    ) from e

log = logging.getLogger("cellns_client.verify")

#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, seconds.
DEFAULT_LEEWAY = 30
#: Largest leeway a verifier accepts: more would keep expired tokens alive.
MAX_LEEWAY = 300
#: Longest ``exp - iat`` accepted by default, seconds.
DEFAULT_MAX_LIFETIME = 86400
#: Shortest interval between JWKS fetches caused by unknown ``kid``s.
REFETCH_INTERVAL = 10.0
#: How long a JWKS answer without ``Cache-Control: max-age`` is used.
DEFAULT_MAX_AGE = 300.0
#: Longest a JWKS answer is used, whatever its ``max-age`` says.
MAX_MAX_AGE = 86400.0
#: Largest JWKS document accepted, bytes.
MAX_JWKS_BYTES = 1 << 20

#: Every error code, in the order of the contract.
CODES = (
    "too_large",
    "malformed",
    "alg_none",
    "disallowed_algorithm",
    "unknown_kid",
    "bad_signature",
    "non_canonical_signature",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "lifetime_too_long",
    "wrong_issuer",
    "wrong_audience",
    "wrong_cell",
    "jwks_unavailable",
)

_ALGS = {"EdDSA": ("OKP", "Ed25519"), "ES256": ("EC", "P-256")}
_CURVE_ALG = {v: k for k, v in _ALGS.items()}
_P256_HALF_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551 // 2
_P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_ED_P = 2**255 - 19
_ED_D = -121665 * pow(121666, _ED_P - 2, _ED_P) % _ED_P
_STRING_CLAIMS = ("iss", "aud", "sub", "jti", "tenant", "cell", "cell_id", "region", "map_version")
_DATE_CLAIMS = ("iat", "nbf", "exp")
_ED = OKPAlgorithm()
_ES = ECAlgorithm(ECAlgorithm.SHA256)


class VerifyError(Exception):
    """Why a token was refused. ``code`` is one of :data:`CODES`; for
    ``wrong_cell``, ``expected`` is this cell and ``got`` the token's cell."""

    def __init__(self, code: str, message: str, *, expected: str = "", got: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.expected = expected
        self.got = got


@dataclass(frozen=True)
class Expectations:
    """What a cell expects of a token."""

    #: Required ``iss``.
    issuer: str
    #: Required ``aud``.
    audience: str
    #: This cell's hostname: ``cell`` must equal it, both in canonical form
    #: (ASCII case-insensitive, one trailing dot ignored).
    cell: str
    #: Leeway on ``exp``, ``nbf`` and ``iat``, seconds (0 to :data:`MAX_LEEWAY`).
    leeway: int = DEFAULT_LEEWAY
    #: Longest ``exp - iat`` accepted, seconds.
    max_lifetime: int = DEFAULT_MAX_LIFETIME

    def __post_init__(self) -> None:
        if type(self.leeway) is not int or not 0 <= self.leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be an int in [0, {MAX_LEEWAY}] seconds, not {self.leeway!r}")
        if type(self.max_lifetime) is not int or self.max_lifetime <= 0:
            raise ValueError(f"max_lifetime must be a positive int (seconds), not {self.max_lifetime!r}")
        if not canonical_host(self.cell):
            raise ValueError("cell must be this cell's hostname")


@dataclass(frozen=True)
class _Key:
    alg: str
    key: Any


@dataclass(frozen=True)
class _Header:
    alg: str
    kid: str


class KeySet:
    """Public keys by ``kid``, from a JWKS document (RFC 7517)."""

    def __init__(self, keys: Mapping[str, _Key]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_jwks(cls, document: Union[bytes, str, Mapping[str, Any]]) -> "KeySet":
        """Parses a JWKS document, entry by entry (sdk/vectors/README.md).

        Entries cellns does not use (other types or curves, no ``kid``,
        ``use`` other than ``sig``, an ``alg`` that is not the curve's) are
        skipped. So is a usable-looking key with bad material (``x``/``y``
        not strict base64url of 32 bytes, not a point of the curve, an
        Ed25519 key of small order), with a warning: one broken key must not
        take the others down. A ``kid`` on more than one entry is ambiguous:
        every entry with it is dropped, with a warning. Only a document that
        is not a JSON object with a ``keys`` array (or larger than 1 MiB) is
        an error (``jwks_unavailable``)."""

        def bad(msg: str) -> VerifyError:
            return VerifyError("jwks_unavailable", f"JWKS: {msg}")

        if isinstance(document, (bytes, str)):
            if len(document) > MAX_JWKS_BYTES:
                raise bad(f"document larger than {MAX_JWKS_BYTES} bytes")
            try:
                doc = json.loads(document)
            except (ValueError, UnicodeDecodeError) as e:
                raise bad(f"not JSON ({e})") from None
        else:
            doc = document
        if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
            raise bad('not an object with a "keys" array')
        entries = [k for k in doc["keys"] if isinstance(k, Mapping)]
        copies: Dict[str, int] = {}
        for k in entries:
            if isinstance(k.get("kid"), str):
                copies[k["kid"]] = copies.get(k["kid"], 0) + 1
        for kid, n in copies.items():
            if n > 1:
                log.warning("JWKS: key id %r published %d times; ambiguous, every copy dropped", kid, n)
        keys: Dict[str, _Key] = {}
        for k in entries:
            kid, kty, crv = k.get("kid"), k.get("kty"), k.get("crv")
            if not (isinstance(kid, str) and isinstance(kty, str) and isinstance(crv, str)):
                continue
            alg = _CURVE_ALG.get((kty, crv))
            if alg is None:
                continue
            # `use` and `alg` may be absent (or null); anything else but "sig"
            # and the curve's algorithm (another string, another type) skips the key.
            if k.get("use") not in (None, "sig") or k.get("alg") not in (None, alg):
                continue
            if copies[kid] > 1:
                continue
            key = _public_key(alg, k.get("x"), k.get("y"))
            if key is None:
                log.warning(
                    "JWKS: key %r skipped: not a valid %s public key (x%s strict base64url of 32 bytes, %s)",
                    kid,
                    crv,
                    "" if alg == "EdDSA" else " and y",
                    "a point not of small order" if alg == "EdDSA" else "a point of the curve",
                )
                continue
            keys[kid] = _Key(alg, key)
        return cls(keys)

    @property
    def kids(self) -> Dict[str, str]:
        """``{kid: alg}`` of the keys."""
        return {kid: k.alg for kid, k in self._keys.items()}

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def verify(self, token: str, expect: Expectations, now: Optional[int] = None) -> Dict[str, Any]:
        """Verifies ``token`` against these keys; the claims (the payload)
        when valid, else :class:`VerifyError`. ``now``: Unix seconds."""
        header, signing_input, payload, sig = _screen(token)
        return _check(self, header, signing_input, payload, sig, expect, int(time.time()) if now is None else now)


def _coordinate(value: object) -> Optional[bytes]:
    """A JWK coordinate: strict base64url of exactly 32 bytes."""
    if not isinstance(value, str):
        return None
    try:
        raw = _b64.decode(value)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _ed25519_point_ok(raw: bytes) -> bool:
    """RFC 8032 §5.1.3 decoding succeeds (y below p, x^2 has a root, no -0)
    and the point is not of small order (8P is not the identity): the
    checks the Rust verifier makes; OpenSSL loads any 32 bytes."""
    p, d = _ED_P, _ED_D
    n = int.from_bytes(raw, "little")
    y, sign = n & (2**255 - 1), n >> 255
    if y >= p:
        return False
    u, v = (y * y - 1) % p, (d * y * y + 1) % p
    x = u * pow(v, 3, p) * pow(u * pow(v, 7, p), (p - 5) // 8, p) % p
    if v * x * x % p == (-u) % p:
        x = x * pow(2, (p - 1) // 4, p) % p
    if v * x * x % p != u or (x == 0 and sign):
        return False
    for _ in range(3):  # 8P, by doubling (the addition law is complete)
        t = d * x * x * y * y % p
        x, y = 2 * x * y * pow(1 + t, p - 2, p) % p, (y * y + x * x) * pow(1 - t, p - 2, p) % p
    return (x, y) != (0, 1)


def _public_key(alg: str, x: object, y: object) -> Any:
    """The key object of a usable-looking JWK's material, or None when it is bad."""
    xb = _coordinate(x)
    if xb is None:
        return None
    if alg == "EdDSA":
        if not _ed25519_point_ok(xb):
            return None
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": x}
        algo: Any = _ED
    else:
        yb = _coordinate(y)
        # cryptography reduces a coordinate of p or more; the other SDKs refuse it.
        if yb is None or max(int.from_bytes(xb, "big"), int.from_bytes(yb, "big")) >= _P256_P:
            return None
        jwk = {"kty": "EC", "crv": "P-256", "x": x, "y": y}
        algo = _ES
    try:
        return algo.from_jwk(jwk)
    except Exception:  # PyJWT's InvalidKeyError, cryptography's ValueError: not on the curve
        return None


def _screen(token: str) -> Tuple[_Header, bytes, Dict[str, Any], bytes]:
    """Everything that needs no key: size, structure, header, claim types."""
    if utf8_length(token) > MAX_TOKEN_BYTES:
        raise VerifyError("too_large", f"token longer than {MAX_TOKEN_BYTES} bytes")

    def malformed(msg: str) -> VerifyError:
        return VerifyError("malformed", f"malformed token: {msg}")

    parts = token.split(".")
    if len(parts) != 3:
        raise malformed("not three base64url parts separated by dots")
    try:
        raw_header = _b64.decode(parts[0])
        raw_payload = _b64.decode(parts[1])
        sig = _b64.decode(parts[2])
    except ValueError as e:
        raise malformed(str(e)) from None
    try:
        header = loads(raw_header.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise malformed(f"header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise malformed("header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise malformed("header has no alg")
    if alg.lower() == "none":
        raise VerifyError("alg_none", "unsigned token (alg none) refused")
    if alg not in _ALGS:
        raise VerifyError("disallowed_algorithm", f"algorithm {alg!r} is not allowed (EdDSA, ES256)")
    # RFC 7515 §4.1.11: critical extensions we do not understand must be refused.
    if "crit" in header:
        raise malformed("header has critical extensions (crit), none are supported")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise malformed("header has no kid")
    try:
        payload = loads(raw_payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise malformed(f"payload is not UTF-8 JSON ({e})") from None
    if not isinstance(payload, dict):
        raise malformed("payload is not a JSON object")
    for name in _STRING_CLAIMS:
        if not isinstance(payload.get(name), str):
            raise malformed(f"claim {name} missing or not a string")
    for name in _DATE_CLAIMS:
        if not is_numeric_date(payload.get(name)):
            raise malformed(f"claim {name} missing or not an integer in [0, 2^53-1]")
    if not canonical_host(payload["cell"]):
        raise malformed("claim cell is empty")
    if payload.get("ext") is not None and not isinstance(payload["ext"], dict):
        raise malformed("claim ext is not an object")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return _Header(alg, kid), signing_input, payload, sig


def _check(
    keys: KeySet,
    header: _Header,
    signing_input: bytes,
    claims: Dict[str, Any],
    sig: bytes,
    expect: Expectations,
    now: int,
) -> Dict[str, Any]:
    key = keys._keys.get(header.kid)
    if key is None:
        raise VerifyError("unknown_kid", f"unknown key id {header.kid!r}")
    if key.alg != header.alg:
        raise VerifyError(
            "disallowed_algorithm",
            f"algorithm {header.alg} is not allowed: key {header.kid!r} is a {key.alg} key",
        )
    bad = VerifyError("bad_signature", "bad signature: the token was tampered with or signed by another key")
    if len(sig) != 64:
        raise bad
    algo = _ED if key.alg == "EdDSA" else _ES
    if not algo.verify(signing_input, key.key, sig):
        raise bad
    if key.alg == "ES256" and int.from_bytes(sig[32:], "big") > _P256_HALF_N:
        raise VerifyError("non_canonical_signature", "ES256 signature not in low-S form")
    leeway = expect.leeway
    if now > claims["exp"] + leeway:
        raise VerifyError("expired", f"token expired at {claims['exp']} (now {now}, leeway {leeway} s)")
    if claims["nbf"] > now + leeway:
        raise VerifyError("not_yet_valid", f"token not valid before {claims['nbf']} (now {now}, leeway {leeway} s)")
    if claims["iat"] > now + leeway:
        raise VerifyError("issued_in_future", f"token issued at {claims['iat']}, in the future (now {now}, leeway {leeway} s)")
    if claims["exp"] - claims["iat"] > expect.max_lifetime:
        raise VerifyError(
            "lifetime_too_long",
            f"token lives {claims['exp'] - claims['iat']} s, more than {expect.max_lifetime} s",
        )
    if claims["iss"] != expect.issuer:
        raise VerifyError("wrong_issuer", f"wrong issuer (expected {expect.issuer!r})")
    if claims["aud"] != expect.audience:
        raise VerifyError("wrong_audience", f"wrong audience (expected {expect.audience!r})")
    here, there = canonical_host(expect.cell), canonical_host(claims["cell"])
    if here != there:
        raise VerifyError(
            "wrong_cell",
            f"token is for cell {there!r}, this is {here!r}: refresh the token",
            expected=here,
            got=there,
        )
    return claims


Fetch = Callable[[str, float, int], Tuple[bytes, Mapping[str, str]]]
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:[,=]|$)", re.IGNORECASE)


def fetch_url(url: str, timeout: float, limit: int) -> Tuple[bytes, Mapping[str, str]]:
    """GETs ``url`` with urllib: the body (at most ``limit`` bytes) and the
    headers (names lowercased). Raises on any failure."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ValueError(f"document of {length} bytes, more than {limit}")
        body = resp.read(limit + 1)
        if len(body) > limit:
            raise ValueError(f"document larger than {limit} bytes")
        return body, {k.lower(): v for k, v in resp.headers.items()}


def cache_seconds(cache_control: Optional[str], default: float, floor: float) -> float:
    """How long to use a JWKS answer: its ``max-age`` (``no-store`` and
    ``no-cache`` mean 0), at least ``floor`` (so a verifier under load does not
    fetch on every token) and at most :data:`MAX_MAX_AGE`; ``default``
    without either."""
    if cache_control:
        if _NO_CACHE.search(cache_control):
            return floor
        m = _MAX_AGE.search(cache_control)
        if m:
            return min(max(float(m.group(1)), floor), MAX_MAX_AGE)
    return min(max(default, floor), MAX_MAX_AGE)


class Verifier:
    """Verifies tokens for one cell, with the keys of a JWKS URL (or a fixed
    :class:`KeySet`). Thread-safe.

    ``Verifier(url, expect)`` fetches the key set now and raises
    :class:`VerifyError` (``jwks_unavailable``) if it cannot, unless
    ``lazy=True`` (then the first verification fetches, and fails with
    ``jwks_unavailable`` until a fetch succeeds).
    """

    def __init__(
        self,
        source: Union[str, KeySet],
        expect: Expectations,
        *,
        refetch_interval: float = REFETCH_INTERVAL,
        default_max_age: float = DEFAULT_MAX_AGE,
        max_jwks_bytes: int = MAX_JWKS_BYTES,
        timeout: float = 5.0,
        lazy: bool = False,
        fetch: Optional[Fetch] = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.expect = expect
        self._url = source if isinstance(source, str) else None
        self._keys = source if isinstance(source, KeySet) else KeySet({})
        self._refetch_interval = refetch_interval
        self._default_max_age = default_max_age
        self._max_bytes = max_jwks_bytes
        self._timeout = timeout
        self._fetch = fetch or fetch_url
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._loaded = self._url is None
        self._stale_at = float("inf") if self._url is None else float("-inf")
        self._kid_refetch_at: Optional[float] = None
        #: Fetches attempted, and the last failure (``None`` after a success): for /readyz and logs.
        self.fetches = 0
        self.last_error: Optional[str] = None
        if self._url is not None and not lazy:
            self._refresh(force=True)
            if not self._loaded:
                raise VerifyError("jwks_unavailable", f"JWKS {self._url}: {self.last_error}")

    @property
    def url(self) -> Optional[str]:
        """The JWKS URL, or ``None`` for a fixed key set."""
        return self._url

    @property
    def kids(self) -> Dict[str, str]:
        """``{kid: alg}`` of the cached keys."""
        return self._keys.kids

    def _refresh(self, force: bool = False, kid: Optional[str] = None) -> None:
        with self._lock:
            now = self._clock()
            # Another thread may have refreshed while this one waited.
            if not force:
                if kid is not None and kid in self._keys:
                    return
                if kid is None and now < self._stale_at:
                    return
            self.fetches += 1
            try:
                assert self._url is not None
                body, headers = self._fetch(self._url, self._timeout, self._max_bytes)
                if len(body) > self._max_bytes:
                    raise ValueError(f"document larger than {self._max_bytes} bytes")
                keys = KeySet.from_jwks(body)
            except Exception as e:  # network, HTTP status, size, parse: all keep the cached keys
                self.last_error = str(e) or type(e).__name__
                # Retry after the refetch interval, not on every token.
                self._stale_at = now + self._refetch_interval
                log.warning("JWKS %s: refresh failed, keeping %d cached key(s): %s", self._url, len(self._keys.kids), self.last_error)
                return
            self._keys = keys
            self._loaded = True
            self.last_error = None
            self._stale_at = now + cache_seconds(headers.get("cache-control"), self._default_max_age, self._refetch_interval)

    def _needs_fetch(self, kid: str) -> bool:
        if self._url is None:
            return False
        now = self._clock()
        if now >= self._stale_at:
            return True
        return kid not in self._keys and (
            self._kid_refetch_at is None or now - self._kid_refetch_at >= self._refetch_interval
        )

    def verify(self, token: str, now: Optional[int] = None) -> Dict[str, Any]:
        """The token's claims when it is valid for this cell, else
        :class:`VerifyError`. May fetch the JWKS (blocking); ``now`` is Unix
        seconds (default: the wall clock)."""
        header, signing_input, payload, sig = _screen(token)
        if self._url is not None:
            refreshed = False
            if self._clock() >= self._stale_at:
                self._refresh()
                refreshed = True
            # An unknown kid refetches, unless the set was just fetched.
            if header.kid not in self._keys and not refreshed:
                t = self._clock()
                with self._lock:
                    allowed = self._kid_refetch_at is None or t - self._kid_refetch_at >= self._refetch_interval
                    if allowed:
                        self._kid_refetch_at = t
                if allowed:
                    self._refresh(kid=header.kid)
            if not self._loaded:
                raise VerifyError("jwks_unavailable", f"JWKS {self._url}: {self.last_error}")
        return _check(
            self._keys, header, signing_input, payload, sig, self.expect, int(self._wall()) if now is None else now
        )

    async def verify_async(self, token: str) -> Dict[str, Any]:
        """:meth:`verify` for event loops: runs in a worker thread only when
        the JWKS may have to be fetched, inline otherwise."""
        try:
            header = _screen(token)[0]
        except VerifyError:
            return self.verify(token)  # raises the same error, without I/O
        if self._needs_fetch(header.kid) or not self._loaded:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self.verify, token)
        return self.verify(token)
