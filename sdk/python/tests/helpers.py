"""Test helpers: a local HTTP server whose answers a test scripts."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple

# (status, headers, body); headers may omit Content-Length (then the
# server closes the connection to end the body).
Reply = Tuple[int, Dict[str, str], bytes]


class Scripted:
    """Serves ``handler(method, path, headers) -> Reply`` on 127.0.0.1."""

    def __init__(self, handler: Callable[[str, str, Dict[str, str]], Reply], host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.requests: List[Tuple[str, str, Dict[str, str]]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def _serve(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append((self.command, self.path, headers))
                status, extra, body = outer.handler(self.command, self.path, headers)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = _serve
            do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), H)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Scripted":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def json_reply(body: bytes, status: int = 200, cache_control: Optional[str] = None) -> Reply:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if cache_control is not None:
        headers["Cache-Control"] = cache_control
    return status, headers, body
