"""ASGI middleware for a cell (asyncio): verifies the bearer token of every
HTTP request and WebSocket handshake, and answers the wrong-cell signal
(421) for a token of another cell or a tenant that moved away; 401 for a
missing or invalid token.

    from cellns_client.asgi import CellnsMiddleware
    from cellns_client.verify import Expectations, Verifier

    verifier = Verifier("https://cellns.internal/.well-known/jwks.json",
                        Expectations("cellns", "cells", "use1-a.cells.example.com"))
    app = CellnsMiddleware(app, verifier)

The application finds the verified claims in ``scope["cellns.claims"]``.
JWKS fetches run in a worker thread, never on the event loop. A refused
WebSocket handshake is closed with code 1008 (policy violation) before it is
accepted.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Dict, Iterable, MutableMapping, Optional

from ._cell import CLAIMS_KEY, Answer, TenantHere, bearer_token, missing_token, refusal, wrong_cell
from .verify import Verifier, VerifyError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class CellnsMiddleware:
    """Wraps an ASGI application (see the module docs).

    ``tenant_here(claims)``, when given (a function or a coroutine
    function), is asked after a token verified: a false answer (the tenant
    moved to another cell) sends the wrong-cell signal too. ``exempt``
    paths (e.g. health checks) pass without a token.
    """

    def __init__(
        self,
        app: App,
        verifier: Verifier,
        *,
        tenant_here: Optional[TenantHere] = None,
        exempt: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.tenant_here = tenant_here
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket") or scope.get("path", "") in self.exempt:
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                authorization = value.decode("latin-1")
                break
        token = bearer_token(authorization)
        if token is None:
            await self._refuse(scope, send, missing_token())
            return
        try:
            claims = await self.verifier.verify_async(token)
        except VerifyError as e:
            await self._refuse(scope, send, refusal(e))
            return
        if self.tenant_here is not None:
            here = self.tenant_here(claims)
            if inspect.isawaitable(here):
                here = await here
            if not here:
                cell = self.verifier.expect.cell
                await self._refuse(scope, send, wrong_cell(cell, cell))
                return
        scope = dict(scope)
        scope[CLAIMS_KEY] = claims
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, answer: Answer) -> None:
        status, headers, body = answer
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": f"{status}"})
            return
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
