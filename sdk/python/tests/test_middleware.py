"""The WSGI and ASGI middleware: claims to the application, the wrong-cell
signal for a token of another cell or a tenant that moved away, 401 for a
missing or invalid token, 503 when the keys cannot be fetched."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any, Dict, List, Optional, Tuple

import pytest

from cellns_client import WrongCell
from cellns_client.asgi import CellnsMiddleware as Asgi
from cellns_client.verify import Expectations, KeySet, Verifier
from cellns_client.wsgi import CellnsMiddleware as Wsgi

from conftest import load

V = load("tokens.json")
CASES = {c["name"]: c["token"] for c in V["cases"]}
EXPECT = Expectations(**V["expect"])
VERIFIER = Verifier(KeySet.from_jwks(V["jwks"]), EXPECT, wall_clock=lambda: V["now"])
MOVED = {"globex"}


def tenant_here(claims: Dict[str, Any]) -> bool:
    return claims["tenant"] not in MOVED


def wsgi_app(environ: dict, start_response: Any) -> List[bytes]:
    body = json.dumps({"tenant": environ.get("cellns.claims", {}).get("tenant")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def call_wsgi(app: Wsgi, token: Optional[str], path: str = "/v1/whoami") -> Tuple[int, Dict[str, str], bytes]:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO()}
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    got: Dict[str, Any] = {}

    def start_response(status: str, headers: List[Tuple[str, str]]) -> None:
        got["status"] = int(status.split()[0])
        got["headers"] = {k.lower(): v for k, v in headers}

    body = b"".join(app(environ, start_response))
    return got["status"], got["headers"], body


async def asgi_app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    body = json.dumps({"tenant": scope.get("cellns.claims", {}).get("tenant")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def call_asgi(app: Asgi, token: Optional[str], path: str = "/v1/whoami", kind: str = "http") -> Tuple[int, Dict[str, str], bytes]:
    headers = [(b"host", b"cell")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": kind, "method": "GET", "path": path, "headers": headers}
    sent: List[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict) -> None:
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    if kind == "websocket":
        return (1008 if sent[0]["type"] == "websocket.close" else 101), {}, b""
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def apps(verifier: Verifier = VERIFIER) -> List[Any]:
    w = Wsgi(wsgi_app, verifier, tenant_here=tenant_here, exempt=["/healthz"])
    a = Asgi(asgi_app, verifier, tenant_here=tenant_here, exempt=["/healthz"])
    return [lambda t, p="/v1/whoami": call_wsgi(w, t, p), lambda t, p="/v1/whoami": call_asgi(a, t, p)]


@pytest.mark.parametrize("call", apps(), ids=["wsgi", "asgi"])
def test_valid_token_reaches_the_app_with_its_claims(call: Any) -> None:
    status, _, body = call(CASES["eddsa_valid"])
    assert (status, json.loads(body)) == (200, {"tenant": "acme"})


@pytest.mark.parametrize("call", apps(), ids=["wsgi", "asgi"])
def test_token_for_another_cell_gets_the_wrong_cell_signal(call: Any) -> None:
    status, headers, body = call(CASES["es256_wrong_cell"])
    assert status == 421
    assert headers["content-type"] == "application/json"
    signal = WrongCell.from_http(status, body)
    assert signal is not None
    assert (signal.expected, signal.got) == ("use1-a.cells.example.com", "use1-b.cells.example.com")


@pytest.mark.parametrize("call", apps(), ids=["wsgi", "asgi"])
def test_tenant_that_moved_away_gets_the_wrong_cell_signal(call: Any) -> None:
    # A valid token of this cell, for a tenant the cell no longer serves.
    MOVED.add("acme")
    try:
        status, _, body = call(CASES["eddsa_valid"])
    finally:
        MOVED.discard("acme")
    signal = WrongCell.from_http(status, body)
    assert signal is not None and signal.expected == signal.got == "use1-a.cells.example.com"
    assert "no longer served" in signal.message


@pytest.mark.parametrize("call", apps(), ids=["wsgi", "asgi"])
def test_missing_and_invalid_tokens_get_401(call: Any) -> None:
    status, headers, body = call(None)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["error"]["code"] == "unauthenticated"
    for name, code in (("eddsa_expired", "expired"), ("es256_high_s_twin", "non_canonical_signature"), ("alg_none", "alg_none")):
        status, headers, body = call(CASES[name])
        assert status == 401, name
        assert 'error="invalid_token"' in headers["www-authenticate"]
        assert json.loads(body)["error"]["code"] == code
        assert WrongCell.from_http(status, body) is None
    # Exempt paths need no token.
    assert call(None, "/healthz")[0] == 200


@pytest.mark.parametrize("which", ["wsgi", "asgi"])
def test_keys_unavailable_is_503(which: str) -> None:
    lazy = Verifier("http://127.0.0.1:1/jwks", EXPECT, lazy=True, timeout=2)
    call = apps(lazy)[0 if which == "wsgi" else 1]
    status, headers, body = call(CASES["eddsa_valid"])
    assert status == 503
    assert json.loads(body)["error"]["code"] == "jwks_unavailable"
    assert "retry-after" in headers


def test_websocket_handshake_is_refused_with_1008() -> None:
    a = Asgi(asgi_app, VERIFIER)
    assert call_asgi(a, CASES["eddsa_wrong_cell"], kind="websocket")[0] == 1008
    assert call_asgi(a, None, kind="websocket")[0] == 1008
    assert call_asgi(a, CASES["eddsa_valid"], kind="websocket")[0] == 101


def test_async_tenant_hook_and_lifespan_pass_through() -> None:
    async def here(claims: Dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        return False

    a = Asgi(asgi_app, VERIFIER, tenant_here=here)
    assert call_asgi(a, CASES["eddsa_valid"])[0] == 421
    seen = []

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    asyncio.run(Asgi(inner, VERIFIER)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]
