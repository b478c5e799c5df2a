"""A small HTTP client (standard library only) that sends requests to the
tenant's cell and follows the tenant when it moves.

It is :class:`~cellns_client.Refresher` with real I/O: it fetches tokens
from the caller's ``get_token`` function, connects to the cell the token's
``cell`` claim names, and on the wrong-cell signal, a 401 or an unreachable
cell drops the token, gets a new one (respecting the backoff) and sends the
request to the cell the new token names. Applications on another HTTP
library drive a :class:`~cellns_client.Refresher` the same way.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

from .claims import ClaimsError
from .refresh import FETCH, SLEEP, Backoff, Refresher, monotonic_ms
from .signal import WRONG_CELL_STATUS, WrongCell


class NoCellAccepts(RuntimeError):
    """A request gave up: every token fetched for it was refused, or no
    token could be fetched. ``__cause__`` is the last failure."""


@dataclass(frozen=True)
class Response:
    """A cell's answer."""

    status: int
    #: Header names lowercased.
    headers: Dict[str, str]
    body: bytes
    #: The cell that answered.
    cell: str

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class CellSession:
    """Sends requests to the tenant's cell (see the module docs).

    ``get_token()`` returns a token from your auth service (which got it
    from cellns). ``base_url(cell)`` turns the token's cell hostname into
    the URL prefix to send to; the default is ``https://<cell>`` (the
    system resolver finds the cell; TLS checks the cell's own name).

    A request fetches at most ``max_fetches`` tokens before it gives up with
    :class:`NoCellAccepts`. Requests are retried on another cell after a
    refusal or when the cell cannot be reached, so make non-idempotent
    requests idempotent (e.g. with a request id) if a retry could repeat
    them. Thread-safe: requests are serialised by a lock, since they share
    one token.
    """

    def __init__(
        self,
        get_token: Callable[[], str],
        *,
        base_url: Optional[Callable[[str], str]] = None,
        backoff: Optional[Backoff] = None,
        seed: Optional[int] = None,
        max_fetches: int = 4,
        timeout: float = 10.0,
        max_response_bytes: int = 16 * 1024 * 1024,
        opener: Optional[urllib.request.OpenerDirector] = None,
        clock: Callable[[], int] = monotonic_ms,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._get_token = get_token
        self._base_url = base_url or (lambda cell: f"https://{cell}")
        self.refresher = Refresher(backoff, seed)
        self._max_fetches = max_fetches
        self._timeout = timeout
        self._max_body = max_response_bytes
        self._opener = opener or urllib.request.build_opener()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        #: Tokens fetched over the session's life (for logs and tests).
        self.fetches = 0

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """Sends ``method path`` to the tenant's cell with the current token."""
        with self._lock:
            return self._request(method, path, body, dict(headers or {}))

    def get(self, path: str, headers: Optional[Mapping[str, str]] = None) -> Response:
        """``GET path``."""
        return self.request("GET", path, None, headers)

    def _request(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str]) -> Response:
        r = self.refresher
        fetched = 0
        last: Optional[BaseException] = None
        plain_421_retried = False
        while True:
            now = self._clock()
            action = r.next(now)
            if action.kind in (SLEEP, FETCH) and fetched >= self._max_fetches:
                # Give up before waiting for a fetch that would not be made.
                raise NoCellAccepts(
                    f"{method} {path}: no cell accepted the {fetched} token(s) fetched for this request"
                ) from last
            if action.kind == SLEEP:
                assert action.until_ms is not None
                self._sleep(max(0, action.until_ms - now) / 1000)
                continue
            if action.kind == FETCH:
                fetched += 1
                self.fetches += 1
                try:
                    token = self._get_token()
                except Exception as e:  # the auth service's failure, whatever it is
                    r.fetch_failed(self._clock())
                    last = e
                    continue
                try:
                    r.fetched(self._clock(), token)
                except ClaimsError as e:
                    r.fetch_failed(self._clock())
                    last = e
                continue
            current = action.current
            assert current is not None
            url = self._base_url(current.claims.cell).rstrip("/") + path
            try:
                resp = self._send(method, url, body, headers, current.token, current.claims.cell)
            except (urllib.error.URLError, OSError) as e:
                # Unreachable: it may be down, and a new token may name its failover.
                r.refused(self._clock())
                last = e
                continue
            signal = WrongCell.from_http(resp.status, resp.body)
            if signal is not None or resp.status == 401:
                r.refused(self._clock())
                last = RuntimeError(
                    f"{current.claims.cell} refused the token: {signal.message if signal else 'HTTP 401'}"
                )
                continue
            if resp.status == WRONG_CELL_STATUS and not plain_421_retried:
                # A bare 421 is plain HTTP (a connection reached a server that
                # cannot answer): retry once on a new connection, keep the token.
                plain_421_retried = True
                continue
            if resp.status < 500:
                r.served(self._clock())
            return resp

    def _send(
        self, method: str, url: str, body: Optional[bytes], headers: Dict[str, str], token: str, cell: str
    ) -> Response:
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        req.add_header("Authorization", f"Bearer {token}")
        try:
            resp = self._opener.open(req, timeout=self._timeout)
        except urllib.error.HTTPError as e:
            resp = e
        with resp:
            data = resp.read(self._max_body + 1)
            if len(data) > self._max_body:
                raise ValueError(f"{url}: response larger than {self._max_body} bytes")
            return Response(
                status=resp.code if isinstance(resp, urllib.error.HTTPError) else resp.status,
                headers={k.lower(): v for k, v in resp.headers.items()},
                body=data,
                cell=cell,
            )
