"""The client side with real sockets: CellSession following the wrong-cell
signal between two local cells, its limits, and the DNS helper."""

from __future__ import annotations

import base64
import json
import socket
from typing import Dict, List

import pytest

from cellns_client import (
    Backoff,
    CellSession,
    Lookup,
    NoCellAccepts,
    WrongCell,
    read_claims,
    resolve,
    same_endpoint,
    tenant_hostname,
)

from helpers import Scripted, json_reply


def token(cell: str, n: int, lifetime: int = 900) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    payload = {"tenant": "acme", "cell": cell, "iat": 1000, "exp": 1000 + lifetime, "map_version": f"v{n}", "jti": str(n)}
    return f"{enc({'alg': 'EdDSA', 'kid': 'k'})}.{enc(payload)}.{'A' * 86}"


class Cell:
    """A toy cell that serves tokens naming it, unless told to refuse."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "serve"
        self.server = Scripted(self.handle)

    def handle(self, method: str, path: str, headers: Dict[str, str]) -> tuple:
        tok = headers.get("authorization", "").removeprefix("Bearer ")
        cell = read_claims(tok).cell
        if self.mode == "plain421":
            self.mode = "serve"
            return 421, {"Content-Length": "0"}, b""
        if cell != self.name or self.mode == "refuse":
            w = WrongCell.new(self.name, cell)
            return json_reply(w.http_body(), 421)
        if self.mode == "401":
            return json_reply(b'{"error":{"code":"expired"}}', 401)
        return json_reply(json.dumps({"cell": self.name, "path": path}).encode())


@pytest.fixture
def cells():
    a, b = Cell("a.test"), Cell("b.test")
    yield {"a.test": a, "b.test": b}
    a.server.close()
    b.server.close()


class Clock:
    def __init__(self) -> None:
        self.ms = 0
        self.sleeps: List[float] = []

    def now(self) -> int:
        return self.ms

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.ms += round(s * 1000)


def session(cells: Dict[str, Cell], tokens: List[str], clock: Clock, **kw: object) -> CellSession:
    it = iter(tokens)

    def get_token() -> str:
        return next(it)

    return CellSession(
        get_token,
        base_url=lambda cell: cells[cell].server.url if cell in cells else "http://127.0.0.1:1",
        clock=clock.now,
        sleep=clock.sleep,
        seed=1,
        **kw,  # type: ignore[arg-type]
    )


def test_follows_a_move_with_one_fetch(cells: Dict[str, Cell]) -> None:
    clock = Clock()
    s = session(cells, [token("a.test", 1), token("b.test", 2)], clock)
    assert s.get("/x").json() == {"cell": "a.test", "path": "/x"}
    cells["a.test"].mode = "refuse"  # the tenant moved to b
    r = s.get("/y")
    assert (r.status, r.cell, s.fetches) == (200, "b.test", 2)
    assert clock.sleeps == [], "a move costs one immediate fetch"
    assert s.refresher.unproductive_fetches == 0


def test_gives_up_after_max_fetches_with_backoff(cells: Dict[str, Cell]) -> None:
    clock = Clock()
    cells["a.test"].mode = "refuse"
    s = session(cells, [token("a.test", i) for i in range(10)], clock, max_fetches=4)
    with pytest.raises(NoCellAccepts) as e:
        s.get("/x")
    assert "4 token(s)" in str(e.value)
    assert s.fetches == 4
    # Between the fetches: the backoff (seed 1), at least 50, 100, 200 ms.
    assert len(clock.sleeps) == 3
    for i, slept in enumerate(clock.sleeps):
        step = min(Backoff().max_ms, 100 * 2**i) / 1000
        assert step / 2 <= slept <= step, (i, slept)


def test_401_and_unreachable_cells_mean_a_new_token(cells: Dict[str, Cell]) -> None:
    clock = Clock()
    cells["a.test"].mode = "401"
    s = session(cells, [token("a.test", 1), token("gone.test", 2), token("b.test", 3)], clock)
    r = s.get("/x")
    assert (r.cell, s.fetches) == ("b.test", 3)


def test_plain_421_is_retried_once_with_the_same_token(cells: Dict[str, Cell]) -> None:
    clock = Clock()
    s = session(cells, [token("a.test", 1)], clock)
    cells["a.test"].mode = "plain421"
    assert s.get("/x").status == 200
    assert s.fetches == 1


def test_auth_service_failures_are_bounded(cells: Dict[str, Cell]) -> None:
    clock = Clock()

    def down() -> str:
        raise ConnectionError("auth service down")

    s = CellSession(down, clock=clock.now, sleep=clock.sleep, seed=3, max_fetches=3)
    with pytest.raises(NoCellAccepts) as e:
        s.get("/x")
    assert isinstance(e.value.__cause__, ConnectionError)
    assert len(clock.sleeps) == 2


def test_dns_helpers() -> None:
    local = resolve("localhost", 80)
    assert local.addrs and set(local.addrs) <= {"127.0.0.1", "::1"}
    with pytest.raises(ValueError):
        resolve("evil.example/path")
    with pytest.raises(socket.gaierror):
        resolve("no-such-name.invalid")
    assert tenant_hostname("ACME", "Cells.Example.com.") == "acme.cells.example.com"
    for bad in ("a.b", "", "x y"):
        with pytest.raises(ValueError):
            tenant_hostname(bad, "cells.example.com")
    a = Lookup("a.cells.example.com", ("10.0.0.1", "10.0.0.2"))
    assert same_endpoint(Lookup("acme.cells.example.com", ("10.0.0.2", "10.0.0.1")), a)
    assert not same_endpoint(Lookup("acme.cells.example.com", ("10.0.0.1",)), a)
    assert same_endpoint(Lookup("a.cells.example.com", ()), a)
    assert not same_endpoint(Lookup("x", ()), Lookup("y", ()))
