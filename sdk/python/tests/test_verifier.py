"""The remote JWKS cache of Verifier: Cache-Control, refetch on unknown kid
at most once per interval, cached keys kept when a refresh fails, size cap."""

from __future__ import annotations

import asyncio
import json
from typing import Dict, List

import pytest

from cellns_client.verify import Expectations, KeySet, Verifier, VerifyError, cache_seconds

from conftest import load
from helpers import Scripted, json_reply

V = load("tokens.json")
NOW = V["now"]
CASES = {c["name"]: c["token"] for c in V["cases"]}
# The signers; the set also has a skipped key and a duplicated kid (README).
ED_JWK, ES_JWK = V["jwks"]["keys"][:2]
EXPECT = Expectations(**V["expect"])


class Jwks:
    """A JWKS endpoint whose document, status and Cache-Control a test changes."""

    def __init__(self, keys: List[dict], cache_control: str = "public, max-age=60") -> None:
        self.doc = json.dumps({"keys": keys}).encode()
        self.status = 200
        self.cache_control: str = cache_control
        self.server = Scripted(lambda m, p, h: json_reply(self.doc, self.status, self.cache_control))

    @property
    def fetches(self) -> int:
        return len(self.server.requests)

    def publish(self, keys: List[dict]) -> None:
        self.doc = json.dumps({"keys": keys}).encode()


@pytest.fixture
def clock() -> List[float]:
    return [1000.0]


def verifier(jwks: Jwks, clock: List[float], **kw: object) -> Verifier:
    return Verifier(
        jwks.server.url + "/jwks",
        EXPECT,
        clock=lambda: clock[0],
        wall_clock=lambda: NOW,
        **kw,  # type: ignore[arg-type]
    )


def test_fetches_once_and_serves_from_the_cache(clock: List[float]) -> None:
    jwks = Jwks([ED_JWK, ES_JWK])
    v = verifier(jwks, clock)
    assert jwks.fetches == 1
    for _ in range(5):
        assert v.verify(CASES["eddsa_valid"])["tenant"] == "acme"
        assert v.verify(CASES["es256_valid"])["cell"] == EXPECT.cell
    assert jwks.fetches == 1
    assert v.kids == {ED_JWK["kid"]: "EdDSA", ES_JWK["kid"]: "ES256"}


def test_unknown_kid_refetches_at_most_once_per_interval(clock: List[float]) -> None:
    jwks = Jwks([ED_JWK], cache_control="max-age=3600")
    v = verifier(jwks, clock)
    # Rotation: the issuer publishes the new key after the verifier started.
    jwks.publish([ED_JWK, ES_JWK])
    assert v.verify(CASES["es256_valid"])["tenant"] == "acme"
    assert jwks.fetches == 2
    # Made-up kids: no refetch within the interval of the last one, then
    # one refetch per interval, however many tokens arrive.
    forged = CASES["eddsa_unknown_kid"]
    for _ in range(20):
        with pytest.raises(VerifyError) as e:
            v.verify(forged)
        assert e.value.code == "unknown_kid"
    assert jwks.fetches == 2
    clock[0] += 9.9
    with pytest.raises(VerifyError):
        v.verify(forged)
    assert jwks.fetches == 2
    clock[0] += 0.1
    for _ in range(20):
        with pytest.raises(VerifyError):
            v.verify(forged)
    assert jwks.fetches == 3
    # Known kids never wait for a fetch.
    v.verify(CASES["eddsa_valid"])
    assert jwks.fetches == 3


def test_respects_max_age(clock: List[float]) -> None:
    jwks = Jwks([ED_JWK], cache_control="public, max-age=60")
    v = verifier(jwks, clock)
    clock[0] += 59
    v.verify(CASES["eddsa_valid"])
    assert jwks.fetches == 1
    clock[0] += 1
    v.verify(CASES["eddsa_valid"])
    assert jwks.fetches == 2
    # A removed key stops verifying once the cache has expired.
    jwks.publish([ES_JWK])
    jwks.cache_control = "max-age=600"
    clock[0] += 60
    v.verify(CASES["es256_valid"])
    assert jwks.fetches == 3
    with pytest.raises(VerifyError) as e:
        v.verify(CASES["eddsa_valid"])
    assert e.value.code == "unknown_kid"


def test_cache_seconds() -> None:
    assert cache_seconds("public, max-age=60", 300, 10) == 60
    assert cache_seconds("max-age=\"120\"", 300, 10) == 120
    assert cache_seconds("s-maxage=5, max-age=90", 300, 10) == 90
    assert cache_seconds(None, 300, 10) == 300
    assert cache_seconds("public", 300, 10) == 300
    assert cache_seconds("max-age=0", 300, 10) == 10  # floor: not a fetch per token
    assert cache_seconds("no-store", 300, 10) == 10
    assert cache_seconds("no-cache, max-age=600", 300, 10) == 10
    assert cache_seconds("max-age=99999999", 300, 10) == 86400
    assert cache_seconds("max-age=-1", 300, 10) == 300


def test_a_failed_refresh_keeps_the_cached_keys(clock: List[float]) -> None:
    jwks = Jwks([ED_JWK], cache_control="max-age=60")
    v = verifier(jwks, clock)
    jwks.status = 500
    clock[0] += 61
    assert v.verify(CASES["eddsa_valid"])["tenant"] == "acme"
    assert jwks.fetches == 2
    assert v.last_error is not None and "500" in v.last_error
    # Retried after the refetch interval, not on every token.
    v.verify(CASES["eddsa_valid"])
    assert jwks.fetches == 2
    jwks.status = 200
    clock[0] += 10
    v.verify(CASES["eddsa_valid"])
    assert jwks.fetches == 3
    assert v.last_error is None
    # Garbage is a failure too, and keeps the keys.
    jwks.doc = b"<html>oops</html>"
    clock[0] += 60
    v.verify(CASES["eddsa_valid"])
    assert jwks.fetches == 4 and v.last_error is not None


def test_a_bad_key_is_skipped_and_logged_the_others_verify(
    clock: List[float], caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 15: one malformed key used to make the whole set refused.
    broken = {**ED_JWK, "kid": "broken", "x": "AAAA"}
    twice = [{**ES_JWK, "kid": "twice"}, {**ED_JWK, "kid": "twice"}]
    jwks = Jwks([broken, ED_JWK, *twice, ES_JWK])
    with caplog.at_level("WARNING", logger="cellns_client.verify"):
        v = verifier(jwks, clock)
    assert v.kids == {ED_JWK["kid"]: "EdDSA", ES_JWK["kid"]: "ES256"}
    assert v.last_error is None
    assert v.verify(CASES["eddsa_valid"])["tenant"] == "acme"
    assert v.verify(CASES["es256_valid"])["tenant"] == "acme"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "'broken' skipped" in logged and "'twice' published 2 times" in logged, logged
    # Only a document that is not a key set is a failed refresh.
    jwks.doc = b'{"keys": {}}'
    clock[0] += 61
    v.verify(CASES["eddsa_valid"])
    assert v.last_error is not None and "keys" in v.last_error


def test_size_cap(clock: List[float]) -> None:
    big = json.dumps({"keys": [ED_JWK], "pad": "x" * 2000}).encode()
    # With a Content-Length, and without one (the body ends at close).
    for headers in ({"Content-Length": str(len(big))}, {}):
        with Scripted(lambda m, p, h: (200, headers, big)) as s:
            with pytest.raises(VerifyError) as e:
                Verifier(s.url, EXPECT, max_jwks_bytes=1024)
            assert e.value.code == "jwks_unavailable"
            assert "1024" in e.value.message
            Verifier(s.url, EXPECT, max_jwks_bytes=4096)


def test_unreachable_and_lazy() -> None:
    with pytest.raises(VerifyError) as e:
        Verifier("http://127.0.0.1:1/jwks", EXPECT, timeout=2)
    assert e.value.code == "jwks_unavailable"
    v = Verifier("http://127.0.0.1:1/jwks", EXPECT, lazy=True, timeout=2, wall_clock=lambda: NOW)
    with pytest.raises(VerifyError) as e:
        v.verify(CASES["eddsa_valid"])
    assert e.value.code == "jwks_unavailable"
    # A malformed token is refused without any fetch.
    fetches = v.fetches
    with pytest.raises(VerifyError) as e:
        v.verify("not a token")
    assert e.value.code == "malformed" and v.fetches == fetches


def test_fixed_key_set_and_async() -> None:
    v = Verifier(KeySet.from_jwks(V["jwks"]), EXPECT, wall_clock=lambda: NOW)
    assert v.url is None
    assert asyncio.run(v.verify_async(CASES["es256_valid"]))["tenant"] == "acme"
    with pytest.raises(VerifyError) as e:
        asyncio.run(v.verify_async(CASES["eddsa_wrong_cell"]))
    assert e.value.code == "wrong_cell"


def test_async_fetches_off_the_event_loop(clock: List[float]) -> None:
    jwks = Jwks([ED_JWK])
    v = verifier(jwks, clock, lazy=True)

    async def main() -> Dict[str, object]:
        return await v.verify_async(CASES["eddsa_valid"])

    assert asyncio.run(main())["tenant"] == "acme"
    assert jwks.fetches == 1


def test_settings_are_bounded() -> None:
    for bad in (301, -1, 1.5, True):
        with pytest.raises(ValueError):
            Expectations("cellns", "cells", "a.example", leeway=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Expectations("cellns", "cells", "a.example", max_lifetime=0)
    with pytest.raises(ValueError):
        Expectations("cellns", "cells", "")
    Expectations("cellns", "cells", "a.example", leeway=300)
