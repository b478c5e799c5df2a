#!/usr/bin/env python3
"""Writes the shared SDK test vectors (sdk/vectors/*.json).

    python sdk/vectors/generate.py            # rewrite the files
    python sdk/vectors/generate.py --check    # exit 1 if they differ from what is committed

Needs `cryptography` (>= 41). The keys are derived from fixed seeds and
ECDSA signatures are deterministic (RFC 6979, cryptography >= 44), so the
output is the same on every run; with an older cryptography the ES256
signatures change on each run, which is harmless (every verdict stays the same).

The expected values are computed here by a small reference model of the
contract in README.md (this directory), written independently of the
Python SDK, so the SDK tests cannot pass by agreeing with themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = Path(__file__).resolve().parent

NOW = 1767225600  # 2026-01-01T00:00:00Z
LEEWAY = 30
MAX_LIFETIME = 86400
MAX_TOKEN_BYTES = 16384
ISSUER, AUDIENCE = "cellns", "cells"
CELL = "use1-a.cells.example.com"
OTHER_CELL = "use1-b.cells.example.com"

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
ED25519_L = 2**252 + 27742317777372353535851937790883648493
ED25519_P = 2**255 - 19
ED25519_D = -121665 * pow(121666, ED25519_P - 2, ED25519_P) % ED25519_P
#: The longest lifetime (exp - iat) a client's claims reader accepts: 30 days.
CLIENT_MAX_LIFETIME = 30 * 86400


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def js(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def seed_bytes(label: str) -> bytes:
    return hashlib.sha256(b"cellns sdk vectors: " + label.encode()).digest()


def canonical_host(name: str) -> str:
    """The one canonical form of a hostname: ONE trailing dot removed, ASCII
    letters lowercased (`a.example..` stays `a.example.`, not a hostname)."""
    if name.endswith("."):
        name = name[:-1]
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name)


# ---------------------------------------------------------------------------
# Curve arithmetic, to construct (and assert the nature of) the bad keys of
# jwks.json: points off the curve, of small order, non-canonical encodings.


def ed25519_x(y: int, sign: int) -> int | None:
    """The x of the Ed25519 point with this y and sign bit (RFC 8032 §5.1.3),
    or None when there is none (y not reduced, no square root, -0)."""
    p = ED25519_P
    if y >= p:
        return None
    u, v = (y * y - 1) % p, (ED25519_D * y * y + 1) % p
    x = u * pow(v, 3, p) * pow(u * pow(v, 7, p), (p - 5) // 8, p) % p
    if v * x * x % p == (-u) % p:
        x = x * pow(2, (p - 1) // 4, p) % p
    if v * x * x % p != u:
        return None
    if x == 0 and sign:
        return None
    return p - x if x % 2 != sign else x


def ed25519_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    p, (x1, y1), (x2, y2) = ED25519_P, a, b
    t = ED25519_D * x1 * x2 * y1 * y2 % p
    return (x1 * y2 + y1 * x2) * pow(1 + t, p - 2, p) % p, (y1 * y2 + x1 * x2) * pow(1 - t, p - 2, p) % p


def ed25519_times_2k(pt: tuple[int, int], k: int) -> tuple[int, int]:
    for _ in range(k):
        pt = ed25519_add(pt, pt)
    return pt


def ed25519_order_divides_8(pt: tuple[int, int]) -> bool:
    return ed25519_times_2k(pt, 3) == (0, 1)


def ed25519_encoding(y: int, sign: int = 0) -> str:
    """x of a JWK: y little-endian (not reduced: the caller decides), sign in the top bit."""
    raw = bytearray(y.to_bytes(32, "little"))
    raw[31] |= sign << 7
    return b64u(bytes(raw))


def p256_y(x: int) -> int | None:
    """A y of the P-256 point with this x, or None (p = 3 mod 4)."""
    p = P256_P
    rhs = (x**3 - 3 * x + P256_B) % p
    y = pow(rhs, (p + 1) // 4, p)
    return y if y * y % p == rhs else None


# ---------------------------------------------------------------------------
# Keys.


class EdKey:
    alg = "EdDSA"

    def __init__(self, label: str) -> None:
        self.sk = ed25519.Ed25519PrivateKey.from_private_bytes(seed_bytes(label))
        raw = self.sk.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.x = b64u(raw)
        thumb = js({"crv": "Ed25519", "kty": "OKP", "x": self.x})
        self.kid = b64u(hashlib.sha256(thumb).digest())

    def jwk(self) -> dict:
        return {"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def sign(self, msg: bytes) -> bytes:
        return self.sk.sign(msg)


class EsKey:
    alg = "ES256"

    def __init__(self, label: str) -> None:
        scalar = int.from_bytes(seed_bytes(label), "big") % (P256_N - 1) + 1
        self.sk = ec.derive_private_key(scalar, ec.SECP256R1())
        nums = self.sk.public_key().public_numbers()
        self.x = b64u(nums.x.to_bytes(32, "big"))
        self.y = b64u(nums.y.to_bytes(32, "big"))
        thumb = js({"crv": "P-256", "kty": "EC", "x": self.x, "y": self.y})
        self.kid = b64u(hashlib.sha256(thumb).digest())

    def jwk(self) -> dict:
        return {"kty": "EC", "crv": "P-256", "x": self.x, "y": self.y, "kid": self.kid, "alg": "ES256", "use": "sig"}

    def sign_rs(self, msg: bytes) -> tuple[int, int]:
        try:
            algo = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        except TypeError:  # cryptography < 44
            algo = ec.ECDSA(hashes.SHA256())
        r, s = decode_dss_signature(self.sk.sign(msg, algo))
        # Low S: the canonical form every vector uses, except the one that
        # tests the refusal of high S.
        return r, min(s, P256_N - s)

    def sign(self, msg: bytes) -> bytes:
        r, s = self.sign_rs(msg)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


ED = EdKey("ed25519 signer")
ES = EsKey("p256 signer")
ED_OTHER = EdKey("ed25519 not published")
ES_OTHER = EsKey("p256 not published")

# Bad key material, each asserted to be what its name says.
ED_NOT_ON_CURVE = next(y for y in range(2, 100) if ed25519_x(y, 0) is None)
# A point of order 8 (the encoding libsodium's small-order blocklist has),
# checked here: on the curve, 8P = 0, 4P != 0.
_O8 = int.from_bytes(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little")
ED_ORDER_8 = (_O8 & (2**255 - 1), _O8 >> 255)
_x8 = ed25519_x(*ED_ORDER_8)
assert _x8 is not None and ed25519_order_divides_8((_x8, ED_ORDER_8[0]))
assert ed25519_times_2k((_x8, ED_ORDER_8[0]), 2) != (0, 1)
# A full-order point with a small y, written non-canonically as y + p (RFC
# 8032 §5.1.3: decoding fails when y >= p; some libraries reduce it).
ED_NON_CANONICAL_Y = next(
    y for y in range(2, 100) if (x := ed25519_x(y, 0)) is not None and not ed25519_order_divides_8((x, y))
)
# A P-256 point with a small x, so that x + p still fits in 32 bytes.
P256_SMALL_X = next(x for x in range(1, 100) if p256_y(x) is not None)

#: The tokens.json key set also publishes a key whose material is bad
#: (skipped) and one kid on two keys (both dropped).
SKIPPED_KID = "skipped-not-a-point"
TWICE_KID = "published-twice"


def tokens_jwks() -> dict:
    broken = {**ED_OTHER.jwk(), "kid": SKIPPED_KID, "x": ed25519_encoding(ED_NOT_ON_CURVE)}
    return {"keys": [ED.jwk(), ES.jwk(), broken, {**ED_OTHER.jwk(), "kid": TWICE_KID}, {**ES_OTHER.jwk(), "kid": TWICE_KID}]}


# ---------------------------------------------------------------------------
# Tokens.


def claims(**over: object) -> dict:
    c: dict = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "exp": NOW + 840,
        "jti": "q0Yl2SVm1QGQ6o1uZkRk0A",
        "tenant": "acme",
        "cell": CELL,
        "cell_id": "use1-a",
        "region": "us-east-1",
        "map_version": "example-1",
    }
    for k, v in over.items():
        if v is DROP:
            del c[k]
        else:
            c[k] = v
    return c


DROP = object()


def header(key, **over: object) -> dict:
    h: dict = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    for k, v in over.items():
        if v is DROP:
            del h[k]
        else:
            h[k] = v
    return h


def raw_part(obj: object) -> str:
    """A part from a JSON value, or from bytes/str taken as they are."""
    if isinstance(obj, bytes):
        return b64u(obj)
    return b64u(js(obj))


def token(key, hdr: object = None, payload: object = None) -> str:
    """hdr/payload signed by key (signature valid over whatever the parts are)."""
    h = raw_part(header(key) if hdr is None else hdr)
    p = raw_part(claims() if payload is None else payload)
    signing_input = f"{h}.{p}".encode()
    return f"{h}.{p}.{b64u(key.sign(signing_input))}"


def with_member(obj_json: bytes, name: str, value: object) -> bytes:
    """A JSON object's text with one more member at its end (a duplicate when
    `name` is already there)."""
    assert obj_json.endswith(b"}")
    return obj_json[:-1] + b"," + js(name) + b":" + js(value) + b"}"


def with_sig(tok: str, sig: bytes) -> str:
    h, p, _ = tok.split(".")
    return f"{h}.{p}.{b64u(sig)}"


def padded_token(key, total: int) -> str:
    """A valid token exactly `total` bytes long (an `ext.pad` claim fills it)."""
    for sub_len in range(1, 8):
        for n in range(total):
            t = token(key, payload=claims(sub="u" * sub_len, ext={"pad": "x" * n}))
            if len(t) == total:
                return t
            if len(t) > total:
                break
    raise AssertionError(f"no token of {total} bytes")


def token_cases() -> list[dict]:
    cases: list[dict] = []

    def valid(name: str, tok: str, payload: dict, **extra: object) -> None:
        cases.append({"name": name, "token": tok, "verdict": "valid", "claims": payload, **extra})

    def bad(name: str, tok: str, code: str, **extra: object) -> None:
        cases.append({"name": name, "token": tok, "verdict": code, **extra})

    for key, other, pre in ((ED, ED_OTHER, "eddsa"), (ES, ES_OTHER, "es256")):
        p = claims()
        valid(f"{pre}_valid", token(key), p)
        # Times at the edges of the leeway and lifetime: still valid.
        p = claims(iat=NOW - 630, nbf=NOW - 630, exp=NOW - LEEWAY)
        valid(f"{pre}_exp_at_leeway_edge", token(key, payload=p), p)
        p = claims(iat=NOW, nbf=NOW + LEEWAY, exp=NOW + 600)
        valid(f"{pre}_nbf_at_leeway_edge", token(key, payload=p), p)
        p = claims(iat=NOW + LEEWAY, nbf=NOW, exp=NOW + 600)
        valid(f"{pre}_iat_at_leeway_edge", token(key, payload=p), p)
        p = claims(iat=NOW - 100, nbf=NOW - 100, exp=NOW - 100 + MAX_LIFETIME)
        valid(f"{pre}_lifetime_at_max", token(key, payload=p), p)
        # One check fails.
        bad(f"{pre}_expired", token(key, payload=claims(iat=NOW - 631, nbf=NOW - 631, exp=NOW - LEEWAY - 1)), "expired")
        bad(f"{pre}_not_yet_valid", token(key, payload=claims(iat=NOW, nbf=NOW + LEEWAY + 1, exp=NOW + 600)), "not_yet_valid")
        bad(f"{pre}_issued_in_future", token(key, payload=claims(iat=NOW + LEEWAY + 1, nbf=NOW, exp=NOW + 600)), "issued_in_future")
        bad(
            f"{pre}_lifetime_too_long",
            token(key, payload=claims(iat=NOW - 100, nbf=NOW - 100, exp=NOW - 100 + MAX_LIFETIME + 1)),
            "lifetime_too_long",
        )
        bad(f"{pre}_wrong_issuer", token(key, payload=claims(iss="someone-else")), "wrong_issuer")
        bad(f"{pre}_wrong_audience", token(key, payload=claims(aud="other-cells")), "wrong_audience")
        bad(f"{pre}_wrong_cell", token(key, payload=claims(cell=OTHER_CELL, cell_id="use1-b")), "wrong_cell")
        bad(f"{pre}_unknown_kid", token(other, hdr=header(other)), "unknown_kid")
        # Signatures.
        good = token(key)
        h, pl, sig = good.split(".")
        tampered = raw_part(claims(tenant="globex"))
        bad(f"{pre}_bad_signature_tampered_payload", f"{h}.{tampered}.{sig}", "bad_signature")
        bad(f"{pre}_bad_signature_other_key_same_kid", token(other, hdr=header(key)), "bad_signature")
        bad(f"{pre}_bad_signature_63_bytes", with_sig(good, key.sign(f"{h}.{pl}".encode())[:63]), "bad_signature")
        bad(f"{pre}_bad_signature_65_bytes", with_sig(good, key.sign(f"{h}.{pl}".encode()) + b"\0"), "bad_signature")
        bad(f"{pre}_bad_signature_empty", f"{h}.{pl}.", "bad_signature")
        # alg that is allowed but not the key's.
        flip = "ES256" if key is ED else "EdDSA"
        bad(f"{pre}_alg_not_the_keys", token(key, hdr=header(key, alg=flip)), "disallowed_algorithm")
        # The base64url of the signature with non-zero trailing bits: the same
        # bytes to a lenient decoder, refused by a strict one.
        last = sig[-1]
        assert B64URL.index(last) % 16 == 0, "64 bytes end in 4 zero bits"
        bad(f"{pre}_signature_trailing_bits", f"{h}.{pl}.{sig[:-1]}{B64URL[B64URL.index(last) + 1]}", "malformed")

    # Hostnames: case and ONE trailing dot do not matter, on either side;
    # a second dot does (`a.example..` is not a hostname).
    p = claims(cell="USE1-A.Cells.Example.COM.")
    valid("cell_claim_case_and_trailing_dot", token(ED, payload=p), p)
    p = claims()
    valid("expected_cell_case_and_trailing_dot", token(ED, payload=p), p, expect={"cell": "Use1-A.CELLS.example.com."})
    assert canonical_host(CELL + "..") != CELL
    bad("cell_claim_two_trailing_dots", token(ED, payload=claims(cell=CELL + "..")), "wrong_cell")
    bad("expected_cell_two_trailing_dots", token(ED), "wrong_cell", expect={"cell": CELL + ".."})
    bad("malformed_cell_only_a_dot", token(ED, payload=claims(cell=".")), "malformed")
    # Keys the set skipped or dropped (see JWKS below): their kid is unknown,
    # and every other key of the set still verifies (all the cases above).
    bad("kid_of_a_skipped_key", token(ED_OTHER, hdr=header(ED_OTHER, kid=SKIPPED_KID)), "unknown_kid")
    bad("kid_published_twice", token(ED_OTHER, hdr=header(ED_OTHER, kid=TWICE_KID)), "unknown_kid")
    bad("kid_published_twice_es256", token(ES_OTHER, hdr=header(ES_OTHER, kid=TWICE_KID)), "unknown_kid")
    p = claims(ext={"plan": "pro", "seats": 12})
    valid("ext_claims", token(ES, payload=p), p)
    p = claims(scope="extra")
    valid("unknown_claims_are_kept", token(ED, payload=p), p)
    # The leeway is a setting.
    p = claims(iat=NOW - 700, nbf=NOW - 700, exp=NOW - 100)
    valid("leeway_300_accepts_expired_by_100", token(ED, payload=p), p, expect={"leeway": 300})
    bad("leeway_0_refuses_expired_by_1", token(ED, payload=claims(iat=NOW - 601, nbf=NOW - 601, exp=NOW - 1)), "expired", expect={"leeway": 0})
    p = claims(exp=NOW)
    valid("leeway_0_accepts_exp_equal_now", token(ED, payload=p), p, expect={"leeway": 0})
    bad("max_lifetime_setting", token(ED, payload=claims(iat=NOW, nbf=NOW, exp=NOW + 3601)), "lifetime_too_long", expect={"max_lifetime": 3600})

    # ES256 signature malleability: (r, n - s) verifies with every ECDSA
    # library but is not the canonical (low-S) form.
    tok = token(ES)
    h, pl, _ = tok.split(".")
    r, s = ES.sign_rs(f"{h}.{pl}".encode())
    assert s <= P256_N // 2
    high = r.to_bytes(32, "big") + (P256_N - s).to_bytes(32, "big")
    bad("es256_high_s_twin", with_sig(tok, high), "non_canonical_signature")
    bad("es256_zero_signature", with_sig(tok, bytes(64)), "bad_signature")
    # Ed25519: S + L (a non-reduced scalar) is refused by every conforming verifier.
    tok = token(ED)
    h, pl, _ = tok.split(".")
    sig = ED.sign(f"{h}.{pl}".encode())
    s_big = int.from_bytes(sig[32:], "little") + ED25519_L
    assert s_big < 2**256
    bad("eddsa_s_plus_l", with_sig(tok, sig[:32] + s_big.to_bytes(32, "little")), "bad_signature")

    # Algorithms.
    p = raw_part(claims())
    for name, alg in (("alg_none", "none"), ("alg_none_uppercase", "NONE"), ("alg_none_mixed_case", "None")):
        bad(name, f"{raw_part(header(ED, alg=alg))}.{p}.", "alg_none")
    signing_input = f"{raw_part(header(ED, alg='HS256'))}.{p}".encode()
    mac = hmac.new(base64.urlsafe_b64decode(ED.x + "="), signing_input, hashlib.sha256).digest()
    bad("hs256_signed_with_the_public_key", f"{signing_input.decode()}.{b64u(mac)}", "disallowed_algorithm")
    jwk_secret = js(ED.jwk())
    signing_input = f"{raw_part(header(ES, alg='HS256'))}.{p}".encode()
    mac = hmac.new(jwk_secret, signing_input, hashlib.sha256).digest()
    bad("hs256_signed_with_the_jwk", f"{signing_input.decode()}.{b64u(mac)}", "disallowed_algorithm")
    for alg in ("RS256", "ES384", "PS256", "Ed25519", "eddsa", "es256", ""):
        bad(f"alg_{alg or 'empty'}", token(ED, hdr=header(ED, alg=alg)), "disallowed_algorithm")

    # Structure.
    good = token(ED)
    h, pl, sig = good.split(".")
    for name, t in (
        ("empty", ""),
        ("one_part", h),
        ("two_parts", f"{h}.{pl}"),
        ("four_parts", f"{good}.{sig}"),
        ("header_not_base64url", f"!!!.{pl}.{sig}"),
        ("header_padded", f"{h}{'=' * (-len(h) % 4) or '=='}.{pl}.{sig}"),
        ("leading_space", f" {good}"),
        ("signature_not_base64url", f"{h}.{pl}.{sig[:-2]}+/"),
    ):
        bad(f"malformed_{name}", t, "malformed")
    for name, hdr in (
        ("header_not_json", b"{alg: EdDSA}"),
        ("header_json_array", ["EdDSA"]),
        ("header_json_string", "EdDSA"),
        ("header_not_utf8", b'{"alg":"EdDSA","kid":"\xff"}'),
        ("header_no_alg", header(ED, alg=DROP)),
        ("header_alg_not_a_string", header(ED, alg=5)),
        ("header_no_kid", header(ED, kid=DROP)),
        ("header_kid_not_a_string", header(ED, kid=7)),
        ("header_crit", header(ED, crit=["exp"])),
        ("header_crit_empty", header(ED, crit=[])),
    ):
        bad(f"malformed_{name}", token(ED, hdr=hdr), "malformed")
    for name, payload in (
        ("payload_not_json", b"not json"),
        ("payload_json_array", [claims()]),
        ("payload_not_utf8", b'{"tenant":"\xff"}'),
    ):
        bad(f"malformed_{name}", token(ED, payload=payload), "malformed")
    # A member given twice, at any depth: JSON parsers disagree on which
    # copy wins, so an ambiguous header or payload is malformed.
    hdr = js(header(ED))
    for name, raw in (
        ("alg", with_member(hdr, "alg", "EdDSA")),
        ("kid_other_value", with_member(hdr, "kid", ED_OTHER.kid)),
        ("typ", with_member(hdr, "typ", "JWT")),
    ):
        bad(f"malformed_header_duplicate_{name}", token(ED, hdr=raw), "malformed")
    pl = js(claims())
    for name, raw in (
        ("tenant", with_member(pl, "tenant", "globex")),
        ("exp", with_member(pl, "exp", NOW + 600)),
        ("unknown_member", with_member(js(claims(scope="a")), "scope", "b")),
        ("escaped_name", pl[:-1] + b',"ten\\u0061nt":"globex"}'),
        ("in_ext", js(claims(ext={"plan": "pro"})).replace(b'"plan":"pro"', b'"plan":"pro","plan":"free"')),
        ("in_array", js(claims(ext={"list": [{"a": 1}]})).replace(b'{"a":1}', b'{"a":1,"a":2}')),
    ):
        assert raw.count(b"globex") <= 1
        bad(f"malformed_payload_duplicate_{name}", token(ED, payload=raw), "malformed")
    # One JSON grammar for every SDK (Rust's serde_json is the strictest of
    # the parsers): no NaN or Infinity, no unpaired surrogate escape, no
    # number beyond a double's range, at most 127 nested arrays and objects.
    base = js(claims())[:-1]
    nested = lambda n: base + b',"x":' + b"[" * n + b"]" * n + b"}"  # noqa: E731
    for name, raw in (
        ("payload_nan", base + b',"x":NaN}'),
        ("payload_infinity", base + b',"x":-Infinity}'),
        ("payload_unpaired_surrogate", base + b',"x":"\\ud800"}'),
        ("payload_unpaired_low_surrogate", base + b',"x":"a\\udc00"}'),
        ("payload_unpaired_surrogate_in_a_name", base + b',"\\ud83dx":1}'),
        ("payload_number_overflows", base + b',"x":1e400}'),
        ("payload_integer_overflows", base + b',"x":' + b"9" * 400 + b"}"),
        ("payload_nested_128", nested(127)),
        ("payload_nested_2000", nested(2000)),
    ):
        bad(f"malformed_{name}", token(ED, payload=raw), "malformed")
    deep = lambda n: js(header(ED))[:-1] + b',"x":' + b"[" * n + b"]" * n + b"}"  # noqa: E731
    bad("malformed_header_nested_128", token(ED, hdr=deep(127)), "malformed")
    # (The limit's other side is in the header: claims nested 127 deep would
    # be too deep for the vector file itself, in serde_json.)
    valid("json_header_nested_127", token(ED, hdr=deep(126)), claims())
    bad("malformed_header_nan", token(ED, hdr=js(header(ED))[:-1] + b',"x":NaN}'), "malformed")
    for name, raw, value in (
        ("surrogate_pair", base + b',"x":"\\ud83d\\ude00"}', "\U0001F600"),
        ("large_finite_number", base + b',"x":1e300}', 1e300),
    ):
        valid(f"json_{name}", token(ED, payload=raw), {**claims(), "x": value})
    # The same names in different objects are not duplicates.
    p = claims(ext={"tenant": "x", "ext": {"tenant": "y"}})
    valid("same_name_in_nested_objects", token(ED, payload=p), p)
    for claim in ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "tenant", "cell", "cell_id", "region", "map_version"):
        bad(f"malformed_missing_{claim}", token(ED, payload=claims(**{claim: DROP})), "malformed")
    for name, over in (
        ("iat_string", {"iat": str(NOW)}),
        ("exp_fraction", {"exp": NOW + 600.5}),
        ("nbf_negative", {"nbf": -1}),
        ("iat_boolean", {"iat": True}),
        ("exp_beyond_2_53", {"exp": 2**53}),
        ("exp_null", {"exp": None}),
        ("tenant_number", {"tenant": 42}),
        ("aud_array", {"aud": [AUDIENCE]}),
        ("iss_null", {"iss": None}),
        ("sub_object", {"sub": {"id": 1}}),
        ("jti_number", {"jti": 1}),
        ("cell_id_number", {"cell_id": 1}),
        ("region_bool", {"region": False}),
        ("map_version_number", {"map_version": 1}),
        ("cell_empty", {"cell": ""}),
        ("cell_number", {"cell": 1}),
        ("ext_string", {"ext": "x"}),
        ("ext_array", {"ext": ["x"]}),
    ):
        bad(f"malformed_{name}", token(ED, payload=claims(**over)), "malformed")

    # Size.
    t = padded_token(ED, MAX_TOKEN_BYTES)
    p = json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "=="))
    valid("size_16384_bytes", t, p)
    bad("too_large_16385_bytes", padded_token(ED, MAX_TOKEN_BYTES + 1), "too_large")
    bad("too_large_garbage", "x" * (MAX_TOKEN_BYTES + 1), "too_large")
    return cases


# ---------------------------------------------------------------------------
# JWKS documents.


def jwks_cases() -> list[dict]:
    def ok(name: str, doc: object, kids: dict) -> dict:
        return {"name": name, "document": json.dumps(doc), "keys": kids}

    def err(name: str, text: str) -> dict:
        return {"name": name, "document": text, "error": "jwks_unavailable"}

    ed, es = ED.jwk(), ES.jwk()
    both = {ED.kid: "EdDSA", ES.kid: "ES256"}
    rsa = {"kty": "RSA", "n": "sXch", "e": "AQAB", "kid": "rsa-1", "alg": "RS256", "use": "sig"}
    bare_ed = {k: v for k, v in ed.items() if k not in ("alg", "use")}
    es_y = int.from_bytes(base64.urlsafe_b64decode(ES.y + "="), "big")
    off_curve_y = b64u(((es_y + 1) % 2**256).to_bytes(32, "big"))
    assert p256_y(int.from_bytes(base64.urlsafe_b64decode(ES.x + "="), "big")) in (es_y, P256_P - es_y)
    small_x, small_y = P256_SMALL_X, p256_y(P256_SMALL_X)
    assert small_y is not None and small_x + P256_P < 2**256

    def p256(x: int, y: int) -> dict:
        return {**es, "kid": "p256-bad", "x": b64u(x.to_bytes(32, "big")), "y": b64u(y.to_bytes(32, "big"))}

    assert B64URL.index(ed["x"][-1]) % 4 == 0, "32 bytes end in 2 unused zero bits"

    def ed_x(x: str) -> dict:
        return {**ed, "kid": "ed25519-bad", "x": x}

    cases = [
        ok("cellns_style", {"keys": [ed, es]}, both),
        ok("no_alg_no_use", {"keys": [bare_ed]}, {ED.kid: "EdDSA"}),
        ok("empty", {"keys": []}, {}),
        ok("other_members_ignored", {"keys": [ed], "note": "x"}, {ED.kid: "EdDSA"}),
        ok("rsa_skipped", {"keys": [rsa, ed]}, {ED.kid: "EdDSA"}),
        ok("use_enc_skipped", {"keys": [{**ed, "use": "enc"}, es]}, {ES.kid: "ES256"}),
        ok("alg_not_the_curves_skipped", {"keys": [{**ed, "alg": "ES256"}, es]}, {ES.kid: "ES256"}),
        ok("no_kid_skipped", {"keys": [{k: v for k, v in ed.items() if k != "kid"}, es]}, {ES.kid: "ES256"}),
        ok("kid_not_a_string_skipped", {"keys": [{**ed, "kid": 5}, es]}, {ES.kid: "ES256"}),
        ok("use_and_alg_null_used", {"keys": [{**ed, "use": None, "alg": None}]}, {ED.kid: "EdDSA"}),
        ok("use_not_a_string_skipped", {"keys": [{**ed, "use": ["sig"]}, es]}, {ES.kid: "ES256"}),
        ok("alg_not_a_string_skipped", {"keys": [{**es, "alg": 5}, ed]}, {ED.kid: "EdDSA"}),
        ok("kty_not_a_string_skipped", {"keys": [{**ed, "kty": ["OKP"]}, es]}, {ES.kid: "ES256"}),
        ok("crv_not_a_string_skipped", {"keys": [{**es, "crv": {"P-256": 1}}, ed]}, {ED.kid: "EdDSA"}),
        ok("x25519_skipped", {"keys": [{**ed, "crv": "X25519", "alg": "ECDH-ES", "use": "enc"}]}, {}),
        ok("p384_skipped", {"keys": [{**es, "crv": "P-384", "alg": "ES384"}]}, {}),
        ok("entry_not_an_object_skipped", {"keys": [5, "x", ed]}, {ED.kid: "EdDSA"}),
        err("not_json", "{keys"),
        err("not_an_object", json.dumps([ed])),
        err("json_null", "null"),
        err("no_keys", json.dumps({"key": [ed]})),
        err("keys_not_an_array", json.dumps({"keys": {"a": ed}})),
        err("keys_null", json.dumps({"keys": None})),
    ]
    # A usable-looking key (the right kty and crv) whose material is bad is
    # skipped like any unusable entry: the keys around it stay usable.
    ed_bad = (
        ("ed25519_short_x", ed_x("AAAA")),
        ("ed25519_33_byte_x", ed_x(b64u(base64.urlsafe_b64decode(ED.x + "=") + b"\0"))),
        ("ed25519_no_x", {k: v for k, v in ed_x("").items() if k != "x"}),
        ("ed25519_x_not_a_string", {**ed_x(""), "x": 5}),
        ("ed25519_x_not_base64url", ed_x(ed["x"][:-1] + "+")),
        ("ed25519_x_padded", ed_x(ed["x"] + "=")),
        ("ed25519_x_trailing_bits", ed_x(ed["x"][:-1] + B64URL[B64URL.index(ed["x"][-1]) + 1])),
        ("ed25519_not_on_curve", ed_x(ed25519_encoding(ED_NOT_ON_CURVE))),
        ("ed25519_small_order_identity", ed_x(ed25519_encoding(1))),
        ("ed25519_small_order_8", ed_x(ed25519_encoding(*ED_ORDER_8))),
        ("ed25519_y_not_reduced", ed_x(ed25519_encoding(ED_NON_CANONICAL_Y + ED25519_P))),
        ("ed25519_negative_zero", ed_x(ed25519_encoding(1, sign=1))),
    )
    es_bad = (
        ("p256_no_y", {k: v for k, v in p256(small_x, small_y).items() if k != "y"}),
        ("p256_y_not_a_string", {**p256(small_x, small_y), "y": None}),
        ("p256_short_x", {**es, "kid": "p256-bad", "x": es["x"][:-4]}),
        ("p256_x_leading_zero_stripped", {**p256(small_x, small_y), "x": b64u(small_x.to_bytes(31, "big"))}),
        ("p256_not_on_curve", {**es, "kid": "p256-bad", "y": off_curve_y}),
        ("p256_x_not_reduced", p256(small_x + P256_P, small_y)),
    )
    for name, key in ed_bad:
        cases.append(ok(f"{name}_skipped", {"keys": [ed, key, es]}, both))
    for name, key in es_bad:
        cases.append(ok(f"{name}_skipped", {"keys": [key, ed, es]}, both))
    # The small-x point itself is a valid key (so the cases above fail for
    # the reason their name gives).
    cases.append(ok("p256_small_x_valid", {"keys": [p256(small_x, small_y)]}, {"p256-bad": "ES256"}))
    cases.append(ok("only_bad_keys", {"keys": [ed_x("AAAA"), {**es, "kid": "p256-bad", "y": off_curve_y}]}, {}))
    # One kid on several entries is ambiguous: every entry with it is
    # dropped, whatever the entries are; the other keys stay.
    other_ed, other_es = ED_OTHER.jwk(), ES_OTHER.jwk()
    twice = {"kid": "twice"}
    cases += [
        ok("duplicate_kid_dropped", {"keys": [{**other_ed, **twice}, ed, {**other_es, **twice}, es]}, both),
        ok("duplicate_kid_same_key_dropped", {"keys": [ed, ed, es]}, {ES.kid: "ES256"}),
        ok("duplicate_kid_three_times", {"keys": [ed, es, {**other_ed, "kid": ED.kid}, {**other_ed, "kid": ED.kid}]}, {ES.kid: "ES256"}),
        ok("duplicate_kid_with_an_unusable_entry", {"keys": [ed, {**rsa, "kid": ED.kid}, es]}, {ES.kid: "ES256"}),
        ok("duplicate_kid_with_a_bad_key", {"keys": [ed, {**ed_x("AAAA"), "kid": ED.kid}, es]}, {ES.kid: "ES256"}),
        ok("duplicate_kid_with_use_enc", {"keys": [{**es, "use": "enc"}, ed, es]}, {ED.kid: "EdDSA"}),
        ok("kid_case_differs_not_duplicate", {"keys": [{**other_ed, "kid": "k"}, {**other_es, "kid": "K"}]}, {"k": "EdDSA", "K": "ES256"}),
    ]
    return cases


# ---------------------------------------------------------------------------
# Reading claims without verifying (the client side).


def unsigned(payload: object, pad: bool = False) -> str:
    h = b64u(js({"alg": "EdDSA", "typ": "JWT", "kid": "k"}))
    p = raw_part(payload)
    if pad:
        p += "=" * (-len(p) % 4)
    return f"{h}.{p}.{b64u(bytes([7]) * 64)}"


def claims_cases() -> list[dict]:
    base = {"tenant": "acme", "cell": "a.cells.example.com", "iat": 1000, "exp": 1900, "map_version": "v1"}
    out: list[dict] = []

    def ok(name: str, tok: str, want: dict) -> None:
        out.append({"name": name, "token": tok, "claims": want})

    def err(name: str, tok: str, kind: str) -> None:
        out.append({"name": name, "token": tok, "error": kind})

    full = claims()
    ok("issued_token", token(ED, payload=full), {k: full[k] for k in ("tenant", "cell", "iat", "exp", "map_version")})
    ok("minimal", unsigned(base), base)
    ok(
        "normalised",
        unsigned({**base, "tenant": "ACME", "cell": "A.Cells.Example.COM."}),
        base,
    )
    # A payload whose base64url needs padding, with and without it.
    payload = {**base, "map_version": "v12"}
    assert len(raw_part(payload)) % 4 != 0
    ok("padding_absent", unsigned(payload), payload)
    ok("padding_present", unsigned(payload, pad=True), payload)
    ok("surrounding_whitespace", " " + unsigned(base) + "\n", base)
    ok("underscore_and_digits", unsigned({**base, "cell": "_x1.c-2.example"}), {**base, "cell": "_x1.c-2.example"})
    ok("signature_ignored", unsigned(base)[:-5] + "AAAAA", base)
    err("too_long", unsigned({**base, "pad": "x" * 16384}), "not_jwt")
    err("empty", "", "not_jwt")
    err("two_parts", ".".join(unsigned(base).split(".")[:2]), "not_jwt")
    err("four_parts", unsigned(base) + ".x", "not_jwt")
    err("payload_not_base64url", "e30.!!!.AA", "payload")
    err("payload_not_json", unsigned(b"nope"), "payload")
    err("payload_array", unsigned([base]), "payload")
    # A member given twice, at any depth (parsers disagree on which wins).
    for name, raw in (
        ("duplicate_cell", with_member(js(base), "cell", "b.cells.example.com")),
        ("duplicate_exp", with_member(js(base), "exp", 1900)),
        ("duplicate_unknown_member", with_member(js({**base, "x": 1}), "x", 1)),
        ("duplicate_nested", with_member(js(base), "ext", {"a": 1}).replace(b'{"a":1}', b'{"a":1,"a":1}')),
        # The JSON grammar of tokens.json.
        ("nan", js(base)[:-1] + b',"x":NaN}'),
        ("unpaired_surrogate", js(base)[:-1] + b',"x":"\\udfff"}'),
        ("number_overflows", js(base)[:-1] + b',"x":-1e309}'),
        ("nested_128", js(base)[:-1] + b',"x":' + b"[" * 127 + b"]" * 127 + b"}"),
        ("nested_5000", js(base)[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ):
        err(name, unsigned(raw), "payload")
    ok("nested_127", unsigned(js(base)[:-1] + b',"x":' + b"[" * 126 + b"]" * 126 + b"}"), base)
    for missing in ("tenant", "cell", "iat", "exp", "map_version"):
        err(f"missing_{missing}", unsigned({k: v for k, v in base.items() if k != missing}), "payload")
    for name, over in (
        ("iat_string", {"iat": "1000"}),
        ("exp_fraction", {"exp": 1900.5}),
        ("exp_negative", {"exp": -1}),
        ("iat_boolean", {"iat": True}),
        ("exp_beyond_2_53", {"exp": 2**53}),
        ("cell_number", {"cell": 5}),
        ("tenant_null", {"tenant": None}),
        ("map_version_number", {"map_version": 1}),
    ):
        err(name, unsigned({**base, **over}), "payload")
    for name, over in (
        ("cell_with_path", {"cell": "evil.example/path?x="}),
        ("cell_empty_label", {"cell": "a..b"}),
        ("cell_empty", {"cell": ""}),
        ("cell_userinfo", {"cell": "user@host"}),
        ("cell_port", {"cell": "a.example:8443"}),
        ("cell_non_ascii", {"cell": "exämple.com"}),
        ("cell_label_64", {"cell": "a" * 64 + ".example"}),
        ("cell_254", {"cell": ".".join(["a" * 62] * 4) + ".ab"}),
        ("tenant_with_dot", {"tenant": "a.b"}),
        ("tenant_empty", {"tenant": ""}),
        ("cell_two_trailing_dots", {"cell": "a.cells.example.com.."}),
        ("cell_only_a_dot", {"cell": "."}),
        ("cell_leading_dot", {"cell": ".a.example"}),
        ("exp_equals_iat", {"exp": 1000}),
        ("exp_before_iat", {"exp": 999}),
        ("lifetime_30_days_plus_1", {"exp": 1000 + CLIENT_MAX_LIFETIME + 1}),
        ("exp_year_9999", {"exp": 253402300799}),
        ("exp_2_53_minus_1", {"exp": 2**53 - 1}),
    ):
        err(name, unsigned({**base, **over}), "invalid")
    ok("lifetime_30_days", unsigned({**base, "exp": 1000 + CLIENT_MAX_LIFETIME}), {**base, "exp": 1000 + CLIENT_MAX_LIFETIME})
    ok("one_trailing_dot", unsigned({**base, "cell": "a.cells.example.com."}), base)
    cell_253 = ".".join(["a" * 62] * 4) + ".a"
    assert len(cell_253) == 253
    ok("cell_253", unsigned({**base, "cell": cell_253}), {**base, "cell": cell_253})
    return out


# ---------------------------------------------------------------------------
# The wrong-cell signal.


def wrong_cell_message(expected: str, got: str) -> str:
    if expected == got:
        return f"the tenant is no longer served by {expected}: get a new token"
    return f"this is {expected}, the token is for {got}: get a new token"


def signal_cases() -> dict:
    a, b = "a.cells.example.com", "b.cells.example.com"
    body = {"error": {"code": "wrong_cell", "message": wrong_cell_message(b, a), "expected": b, "got": a}}
    http = [
        {"name": "signal", "status": 421, "body": json.dumps(body), "signal": {"expected": b, "got": a, "message": body["error"]["message"]}},
        {
            "name": "signal_tenant_moved_away",
            "status": 421,
            "body": json.dumps({"error": {"code": "wrong_cell", "message": wrong_cell_message(a, a), "expected": a, "got": a}}),
            "signal": {"expected": a, "got": a, "message": wrong_cell_message(a, a)},
        },
        {
            "name": "signal_code_only",
            "status": 421,
            "body": '{"error":{"code":"wrong_cell"}}',
            "signal": {"expected": "", "got": "", "message": ""},
        },
        {
            "name": "signal_fields_of_other_types_ignored",
            "status": 421,
            "body": '{"error":{"code":"wrong_cell","expected":5,"got":null,"message":["x"]},"extra":1}',
            "signal": {"expected": "", "got": "", "message": ""},
        },
        {"name": "status_401", "status": 401, "body": json.dumps(body), "signal": None},
        {"name": "status_200", "status": 200, "body": json.dumps(body), "signal": None},
        {"name": "status_503", "status": 503, "body": json.dumps(body), "signal": None},
        {"name": "other_code", "status": 421, "body": '{"error":{"code":"misdirected","message":"x"}}', "signal": None},
        {"name": "code_case_differs", "status": 421, "body": '{"error":{"code":"WRONG_CELL"}}', "signal": None},
        {"name": "plain_text", "status": 421, "body": "Misdirected Request", "signal": None},
        {"name": "empty_body", "status": 421, "body": "", "signal": None},
        {"name": "json_null", "status": 421, "body": "null", "signal": None},
        {"name": "error_not_an_object", "status": 421, "body": '{"error":"wrong_cell"}', "signal": None},
        {"name": "code_at_top_level", "status": 421, "body": '{"code":"wrong_cell"}', "signal": None},
        {"name": "code_not_a_string", "status": 421, "body": '{"error":{"code":1}}', "signal": None},
    ]
    grpc = [
        {"name": "signal", "code": 9, "trailers": [["cellns-wrong-cell", b]], "signal": {"expected": b}},
        {"name": "signal_among_others", "code": 9, "trailers": [["x-a", "1"], ["cellns-wrong-cell", b], ["grpc-status-details-bin", "AAAA"]], "signal": {"expected": b}},
        {"name": "key_case_insensitive", "code": 9, "trailers": [["Cellns-Wrong-Cell", b]], "signal": {"expected": b}},
        {"name": "empty_value", "code": 9, "trailers": [["cellns-wrong-cell", ""]], "signal": {"expected": ""}},
        {"name": "no_trailer", "code": 9, "trailers": [["x-a", "1"]], "signal": None},
        {"name": "no_trailers", "code": 9, "trailers": [], "signal": None},
        {"name": "unavailable", "code": 14, "trailers": [["cellns-wrong-cell", b]], "signal": None},
        {"name": "unauthenticated", "code": 16, "trailers": [["cellns-wrong-cell", b]], "signal": None},
        {"name": "ok", "code": 0, "trailers": [["cellns-wrong-cell", b]], "signal": None},
    ]
    make = []
    for exp_in, got_in in ((b, a), ("B.Cells.Example.com.", a), (a, "A.CELLS.EXAMPLE.COM."), (b, b + "."), (b + "..", a)):
        e, g = canonical_host(exp_in), canonical_host(got_in)
        make.append(
            {
                "expected": exp_in,
                "got": got_in,
                "status": 421,
                "body": {"error": {"code": "wrong_cell", "message": wrong_cell_message(e, g), "expected": e, "got": g}},
                "grpc": {"code": 9, "trailer": ["cellns-wrong-cell", e], "message": wrong_cell_message(e, g)},
            }
        )
    return {"http": http, "grpc": grpc, "make": make}


# ---------------------------------------------------------------------------
# Backoff, jitter and the refresh state machine (a reference model).

M64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed: int) -> None:
        self.state = seed & M64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def jitter(self) -> float:
        return (self.next() >> 11) * 2.0**-53


def delay_ms(n: int, jitter: float, initial: int = 100, cap: int = 5000) -> int:
    if n == 0:
        return 0
    d = cap if n - 1 >= 64 else min(cap, initial * 2 ** (n - 1))
    half = d // 2
    return half + int(half * jitter)  # floor: both are non-negative


def lead_ms(lifetime_s: int) -> int:
    life = lifetime_s * 1000
    return min(max(life // 5, 1000), 60000, life // 2)


class Model:
    """The refresh rule of docs/sdk.md, with the time in milliseconds."""

    def __init__(self, seed: int, initial: int, cap: int) -> None:
        self.rng = SplitMix64(seed)
        self.initial, self.cap = initial, cap
        self.current: dict | None = None
        self.unproductive = 0
        self.attempt = 0
        self.gate: int | None = None

    def next(self, now: int) -> dict:
        c = self.current
        usable = c is not None and now < c["expires_at"]
        due = c is None or now >= c["refresh_at"]
        if due:
            if self.gate is not None and now < self.gate:
                if not usable:
                    return {"action": "sleep", "until_ms": self.gate}
            else:
                self.unproductive = min(self.unproductive + 1, 2**32 - 1)
                self.attempt += 1
                self.gate = now + delay_ms(self.unproductive, self.rng.jitter(), self.initial, self.cap)
                return {"action": "fetch"}
        assert c is not None
        return {"action": "send", "cell": c["cell"], "token": c["token"]}

    def fetched(self, now: int, tok: str, cell: str | None, lifetime_s: int | None) -> bool:
        """False when the token is unreadable (a failed fetch)."""
        if cell is None or lifetime_s is None or not 0 < lifetime_s <= CLIENT_MAX_LIFETIME:
            return False
        life = lifetime_s * 1000
        self.current = {
            "token": tok,
            "cell": cell,
            "received": now,
            "refresh_at": now + life - lead_ms(lifetime_s),
            "expires_at": now + life,
            "attempt": self.attempt,
        }
        return True

    def served(self) -> None:
        if self.current is not None and self.current["attempt"] == self.attempt:
            self.unproductive = 0
            self.gate = None

    def refused(self) -> None:
        self.current = None


def client_token(cell: str, lifetime: int, n: int, iat: int = 1_000_000) -> str:
    return unsigned({"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "iat": iat, "nbf": iat, "exp": iat + lifetime, "jti": f"j{n}", "tenant": "acme", "cell": cell, "cell_id": "x", "region": "r", "map_version": "v1"})


class Script:
    def __init__(self, name: str, seed: int, initial: int = 100, cap: int = 5000) -> None:
        self.model = Model(seed, initial, cap)
        self.out = {"name": name, "seed": str(seed), "initial_ms": initial, "max_ms": cap, "steps": []}
        self.n = 0

    def next(self, now: int) -> dict:
        got = self.model.next(now)
        self.out["steps"].append({"op": "next", "now_ms": now, "expect": got})
        return got

    def fetched(self, now: int, cell: str, lifetime: int, iat: int = 1_000_000) -> None:
        self.n += 1
        tok = client_token(cell, lifetime, self.n, iat)
        ok = self.model.fetched(now, tok, cell, lifetime)
        self.out["steps"].append({"op": "fetched", "now_ms": now, "token": tok, "ok": ok})

    def fetched_garbage(self, now: int) -> None:
        self.model.fetched(now, "garbage", None, None)
        self.out["steps"].append({"op": "fetched", "now_ms": now, "token": "garbage", "ok": False})

    def op(self, name: str, now: int) -> None:
        if name == "served":
            self.model.served()
        elif name == "refused":
            self.model.refused()
        self.out["steps"].append({"op": name, "now_ms": now})


def refresher_scenarios() -> list[dict]:
    out = []

    # A cell refuses every token: fetches slow down to the cap.
    s = Script("refusal_loop", 7)
    now = 0
    fetch_times = []
    while now < 60_000:
        a = s.next(now)
        if a["action"] == "fetch":
            fetch_times.append(now)
            s.fetched(now, "a.cells.example.com", 900)
        elif a["action"] == "send":
            s.op("refused", now)
        else:
            now = a["until_ms"]
    gaps = [b - a for a, b in zip(fetch_times, fetch_times[1:])]
    for i, g in enumerate(gaps):
        d = min(5000, 100 * 2**i)
        assert d // 2 <= g <= d, (i, g)
    out.append(s.out)

    # A move: served, then refused once: one immediate fetch; the next move too.
    s = Script("move_costs_one_immediate_fetch", 3)
    s.next(0)
    s.fetched(0, "a.cells.example.com", 900)
    s.next(0)
    s.op("served", 0)
    s.next(60_000)
    s.op("refused", 60_000)
    s.next(60_000)
    s.fetched(60_000, "b.cells.example.com", 900)
    s.next(60_000)
    s.op("served", 60_001)
    s.op("refused", 70_000)
    s.next(70_000)
    s.fetched(70_000, "a.cells.example.com", 900)
    s.next(70_000)
    out.append(s.out)

    # Refresh before exp: a 900 s token 60 s early, a 10 s one 2 s early.
    s = Script("refresh_before_exp", 1)
    s.next(0)
    s.fetched(0, "a.cells.example.com", 900)
    s.op("served", 0)
    s.next(839_999)
    s.next(840_000)
    s.fetched(840_000, "a.cells.example.com", 10)
    s.op("served", 840_000)
    s.next(847_999)
    s.next(848_000)
    out.append(s.out)

    # The auth service fails while the token still lives: the old token is
    # sent between attempts (which back off); once expired, only sleep/fetch.
    s = Script("failing_refresh_keeps_the_old_token", 2)
    s.next(0)
    s.fetched(0, "a.cells.example.com", 100)
    s.op("served", 0)
    now = 80_000
    while now < 100_500:
        a = s.next(now)
        if a["action"] == "fetch":
            s.op("fetch_failed", now)
        elif a["action"] == "send":
            s.op("served", now)
        if a["action"] == "sleep":
            now = a["until_ms"]
        else:
            now += 250
    s.next(now)
    out.append(s.out)

    # An unreadable token is a failed fetch: back off, then fetch again.
    s = Script("unreadable_token", 4)
    s.next(0)
    s.fetched_garbage(0)
    a = s.next(0)
    assert a["action"] == "sleep"
    s.next(a["until_ms"] - 1)
    s.next(a["until_ms"])
    out.append(s.out)

    # A token living more than 30 days is unreadable (a failed fetch); one
    # of exactly 30 days is used, and refreshed a minute before its end.
    s = Script("lifetime_over_30_days", 6)
    s.next(0)
    s.fetched(0, "a.cells.example.com", CLIENT_MAX_LIFETIME + 1)
    a = s.next(0)
    assert a["action"] == "sleep"
    s.next(a["until_ms"])
    s.fetched(a["until_ms"], "a.cells.example.com", CLIENT_MAX_LIFETIME)
    s.op("served", a["until_ms"])
    end = a["until_ms"] + CLIENT_MAX_LIFETIME * 1000
    s.next(end - 60_001)
    s.next(end - 60_000)
    out.append(s.out)

    # iat/exp decades in the past: the lifetime counts from receipt.
    s = Script("lifetime_from_receipt", 5)
    s.next(0)
    s.fetched(0, "a.cells.example.com", 300, iat=1000)
    s.op("served", 0)
    s.next(200_000)
    s.next(239_999)
    s.next(240_000)
    out.append(s.out)

    # A custom backoff.
    s = Script("custom_backoff", 11, initial=1000, cap=3000)
    now = 0
    for _ in range(12):
        a = s.next(now)
        if a["action"] == "fetch":
            s.op("fetch_failed", now)
        else:
            now = a["until_ms"]
    out.append(s.out)
    return out


def backoff_vectors() -> dict:
    mix = []
    for seed in (0, 1, 42, 2**64 - 1):
        g = SplitMix64(seed)
        mix.append({"seed": str(seed), "outputs": [str(g.next()) for _ in range(5)]})
    seqs = []
    for seed, initial, cap, count in ((0, 100, 5000, 12), (42, 100, 5000, 12), (2**63 + 5, 100, 5000, 8), (9, 250, 60000, 16), (7, 1, 1, 4)):
        g = SplitMix64(seed)
        attempts = []
        for n in range(1, count + 1):
            j = g.jitter()
            attempts.append({"n": n, "jitter": j, "delay_ms": delay_ms(n, j, initial, cap)})
        seqs.append({"seed": str(seed), "initial_ms": initial, "max_ms": cap, "attempts": attempts})
    edges = []
    for n, j in ((0, 0.5), (1, 0.0), (1, 0.9999999999999999), (7, 0.5), (8, 0.0), (64, 0.25), (65, 0.25), (1000, 0.5), (4294967295, 0.999)):
        edges.append({"n": n, "jitter": j, "initial_ms": 100, "max_ms": 5000, "delay_ms": delay_ms(n, j)})
    leads = [{"lifetime_s": s, "lead_ms": lead_ms(s)} for s in (1, 2, 3, 7, 10, 11, 100, 299, 300, 301, 900, 3600, 86400)]
    return {
        "splitmix64": mix,
        "sequences": seqs,
        "delays": edges,
        "refresh_lead": leads,
        "refresher": refresher_scenarios(),
    }


# ---------------------------------------------------------------------------


def documents() -> dict[str, object]:
    return {
        "tokens.json": {
            "now": NOW,
            "expect": {"issuer": ISSUER, "audience": AUDIENCE, "cell": CELL, "leeway": LEEWAY, "max_lifetime": MAX_LIFETIME},
            "jwks": tokens_jwks(),
            "cases": token_cases(),
        },
        "jwks.json": {"cases": jwks_cases()},
        "claims.json": {"cases": claims_cases()},
        "wrong_cell.json": signal_cases(),
        "backoff.json": backoff_vectors(),
    }


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, doc in documents().items():
        text = json.dumps(doc, indent=1, ensure_ascii=True) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path} ({len(text)} bytes)")
    if stale:
        print(f"out of date: {', '.join(stale)} (run sdk/vectors/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
