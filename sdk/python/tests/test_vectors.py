"""Every case of sdk/vectors/*.json, which the TypeScript SDK and the Rust
crate run too."""

from __future__ import annotations

import pytest

from cellns_client import (
    FETCH,
    SEND,
    SLEEP,
    Backoff,
    ClaimsError,
    Refresher,
    SplitMix64,
    WrongCell,
    read_claims,
    refresh_lead_ms,
)
from cellns_client.verify import Expectations, KeySet, VerifyError

from conftest import load

TOKENS = load("tokens.json")
JWKS = load("jwks.json")
CLAIMS = load("claims.json")
SIGNAL = load("wrong_cell.json")
BACKOFF = load("backoff.json")
KEYS = KeySet.from_jwks(TOKENS["jwks"])


def test_the_vectors_cover_every_code() -> None:
    from cellns_client.verify import CODES

    seen = {c["verdict"] for c in TOKENS["cases"]} | {c.get("error") for c in JWKS["cases"]}
    assert set(CODES) <= seen


@pytest.mark.parametrize("case", TOKENS["cases"], ids=lambda c: c["name"])
def test_token(case: dict) -> None:
    expect = Expectations(**{**TOKENS["expect"], **case.get("expect", {})})
    now = case.get("now", TOKENS["now"])
    if case["verdict"] == "valid":
        assert KEYS.verify(case["token"], expect, now=now) == case["claims"]
    else:
        with pytest.raises(VerifyError) as e:
            KEYS.verify(case["token"], expect, now=now)
        assert e.value.code == case["verdict"], str(e.value)


def test_wrong_cell_error_names_both_cells() -> None:
    case = next(c for c in TOKENS["cases"] if c["verdict"] == "wrong_cell")
    with pytest.raises(VerifyError) as e:
        KEYS.verify(case["token"], Expectations(**TOKENS["expect"]), now=TOKENS["now"])
    assert (e.value.expected, e.value.got) == ("use1-a.cells.example.com", "use1-b.cells.example.com")


@pytest.mark.parametrize("case", JWKS["cases"], ids=lambda c: c["name"])
def test_jwks(case: dict) -> None:
    if "error" in case:
        with pytest.raises(VerifyError) as e:
            KeySet.from_jwks(case["document"])
        assert e.value.code == case["error"]
    else:
        assert KeySet.from_jwks(case["document"]).kids == case["keys"]


@pytest.mark.parametrize("case", CLAIMS["cases"], ids=lambda c: c["name"])
def test_claims(case: dict) -> None:
    if "error" in case:
        with pytest.raises(ClaimsError) as e:
            read_claims(case["token"])
        assert e.value.kind == case["error"], str(e.value)
    else:
        c = read_claims(case["token"])
        got = {"tenant": c.tenant, "cell": c.cell, "iat": c.iat, "exp": c.exp, "map_version": c.map_version}
        assert got == case["claims"]


@pytest.mark.parametrize("case", SIGNAL["http"], ids=lambda c: c["name"])
def test_signal_http(case: dict) -> None:
    for body in (case["body"], case["body"].encode()):
        got = WrongCell.from_http(case["status"], body)
        want = case["signal"]
        assert (None if got is None else {"expected": got.expected, "got": got.got, "message": got.message}) == want


@pytest.mark.parametrize("case", SIGNAL["grpc"], ids=lambda c: c["name"])
def test_signal_grpc(case: dict) -> None:
    pairs = [tuple(t) for t in case["trailers"]]
    for trailers in (pairs, [(k, v.encode()) for k, v in pairs]):
        got = WrongCell.from_grpc(case["code"], trailers)
        assert (None if got is None else {"expected": got.expected}) == case["signal"]


@pytest.mark.parametrize("case", SIGNAL["make"], ids=lambda c: f"{c['expected']}<-{c['got']}")
def test_signal_make(case: dict) -> None:
    import json

    w = WrongCell.new(case["expected"], case["got"])
    assert json.loads(w.http_body()) == case["body"]
    assert WrongCell.from_http(case["status"], w.http_body()) == w
    assert list(w.grpc_trailers()[0]) == case["grpc"]["trailer"]
    assert w.message == case["grpc"]["message"]
    assert WrongCell.from_grpc(case["grpc"]["code"], w.grpc_trailers()) is not None


@pytest.mark.parametrize("case", BACKOFF["splitmix64"], ids=lambda c: c["seed"])
def test_splitmix64(case: dict) -> None:
    g = SplitMix64(int(case["seed"]))
    assert [str(g.next()) for _ in case["outputs"]] == case["outputs"]


@pytest.mark.parametrize("case", BACKOFF["sequences"], ids=lambda c: c["seed"])
def test_backoff_sequence(case: dict) -> None:
    g = SplitMix64(int(case["seed"]))
    b = Backoff(case["initial_ms"], case["max_ms"])
    for a in case["attempts"]:
        j = g.jitter()
        assert j == a["jitter"]
        assert b.delay_ms(a["n"], j) == a["delay_ms"], a


@pytest.mark.parametrize("case", BACKOFF["delays"], ids=lambda c: f"{c['n']}@{c['jitter']}")
def test_backoff_delay(case: dict) -> None:
    assert Backoff(case["initial_ms"], case["max_ms"]).delay_ms(case["n"], case["jitter"]) == case["delay_ms"]


@pytest.mark.parametrize("case", BACKOFF["refresh_lead"], ids=lambda c: str(c["lifetime_s"]))
def test_refresh_lead(case: dict) -> None:
    assert refresh_lead_ms(case["lifetime_s"]) == case["lead_ms"]


@pytest.mark.parametrize("case", BACKOFF["refresher"], ids=lambda c: c["name"])
def test_refresher_script(case: dict) -> None:
    r = Refresher(Backoff(case["initial_ms"], case["max_ms"]), seed=int(case["seed"]))
    for i, step in enumerate(case["steps"]):
        now, op = step["now_ms"], step["op"]
        where = f"step {i}: {step}"
        if op == "next":
            a = r.next(now)
            want = step["expect"]
            assert a.kind == want["action"], where
            if a.kind == SLEEP:
                assert a.until_ms == want["until_ms"], where
            elif a.kind == SEND:
                assert a.current is not None
                assert (a.current.claims.cell, a.current.token) == (want["cell"], want["token"]), where
            else:
                assert a.kind == FETCH
        elif op == "fetched":
            if step["ok"]:
                r.fetched(now, step["token"])
            else:
                with pytest.raises(ClaimsError):
                    r.fetched(now, step["token"])
        elif op == "fetch_failed":
            r.fetch_failed(now)
        elif op == "served":
            r.served(now)
        elif op == "refused":
            r.refused(now)
        else:
            pytest.fail(f"unknown op {op!r}")
