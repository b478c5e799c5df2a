"""Toy cells for the end-to-end tests: cell a is a WSGI app (wsgiref),
cell b an ASGI app (served by a minimal asyncio HTTP/1.1 server, since the
standard library has no ASGI server). Both use the SDK's middleware with a
JWKS verifier for their own hostname, and learn where the tenant lives from
cellns's DNS answer for the tenant's name, as a real cell can."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from cellns_client.asgi import CellnsMiddleware as AsgiMiddleware
from cellns_client.verify import Expectations, Verifier
from cellns_client.wsgi import CellnsMiddleware as WsgiMiddleware

from cellns_server import HOST, IP, ZONE, query_a


def tenant_check(dns: Tuple[str, int], cell: str) -> Callable[[Dict[str, Any]], bool]:
    def here(claims: Dict[str, Any]) -> bool:
        return query_a(dns, f"{claims['tenant']}.{ZONE}") == [IP[cell]]

    return here


def whoami(cell: str, claims: Dict[str, Any]) -> bytes:
    return json.dumps({"cell": HOST[cell], "tenant": claims["tenant"]}).encode()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class WsgiCell:
    """Cell a: wsgiref serving the middleware-wrapped app."""

    def __init__(self, jwks_url: str, dns: Tuple[str, int], port: int) -> None:
        verifier = Verifier(jwks_url, Expectations("cellns", "cells", HOST["a"]))

        def app(environ: dict, start_response: Any) -> List[bytes]:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [whoami("a", environ["cellns.claims"])]

        wrapped = WsgiMiddleware(app, verifier, tenant_here=tenant_check(dns, "a"))
        self.server: WSGIServer = make_server(IP["a"], port, wrapped, handler_class=_QuietHandler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AsgiCell:
    """Cell b: the middleware-wrapped ASGI app on a minimal HTTP/1.1 server
    (one request per connection) running its own event loop in a thread."""

    def __init__(self, jwks_url: str, dns: Tuple[str, int], port: int) -> None:
        verifier = Verifier(jwks_url, Expectations("cellns", "cells", HOST["b"]))

        async def app(scope: dict, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": whoami("b", scope["cellns.claims"])})

        self.app = AsgiMiddleware(app, verifier, tenant_here=tenant_check(dns, "b"))
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((IP["b"], port))
        self.port = self.sock.getsockname()[1]
        ready = threading.Event()
        self.server: Optional[asyncio.base_events.Server] = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                self.server = await asyncio.start_server(self._handle, sock=self.sock)
                ready.set()

            self.loop.run_until_complete(start())
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = []
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers.append((k.strip().lower().encode(), v.strip().encode("latin-1")))
            path, _, query = target.partition("?")
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                "path": path, "query_string": query.encode(), "headers": headers,
            }
            sent: List[dict] = []

            async def receive() -> dict:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(msg: dict) -> None:
                sent.append(msg)

            await self.app(scope, receive, send)
            start = sent[0]
            body = b"".join(m.get("body", b"") for m in sent[1:])
            out = [f"HTTP/1.1 {start['status']} X".encode()]
            out += [k + b": " + v for k, v in start["headers"] if k != b"content-length"]
            out += [f"content-length: {len(body)}".encode(), b"connection: close", b"", body]
            writer.write(b"\r\n".join(out))
            await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def start_cells(jwks_url: str, dns: Tuple[str, int]) -> Tuple[WsgiCell, AsgiCell]:
    """Both cells on one port (as cells share 443 in production)."""
    last: Optional[OSError] = None
    for _ in range(20):
        a = WsgiCell(jwks_url, dns, 0)
        try:
            return a, AsgiCell(jwks_url, dns, a.port)
        except OSError as e:  # the port is taken on 127.0.0.3: try another
            a.close()
            last = e
    raise RuntimeError(f"no port free on both {IP['a']} and {IP['b']}: {last}")
