"""WSGI middleware for a cell: verifies the bearer token of every request
and answers the wrong-cell signal (421) for a token of another cell or a
tenant that moved away; 401 for a missing or invalid token.

    from cellns_client.verify import Expectations, Verifier
    from cellns_client.wsgi import CellnsMiddleware

    verifier = Verifier("https://cellns.internal/.well-known/jwks.json",
                        Expectations("cellns", "cells", "use1-a.cells.example.com"))
    app = CellnsMiddleware(app, verifier)

The application finds the verified claims in ``environ["cellns.claims"]``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional

from ._cell import CLAIMS_KEY, Answer, TenantHere, bearer_token, missing_token, refusal, wrong_cell
from .verify import Verifier, VerifyError

_REASONS = {401: "Unauthorized", 421: "Misdirected Request", 503: "Service Unavailable"}


class CellnsMiddleware:
    """Wraps a WSGI application (see the module docs).

    ``tenant_here(claims) -> bool``, when given, is asked after a token
    verified: ``False`` (the tenant moved to another cell) sends the
    wrong-cell signal too. ``exempt`` paths (e.g. health checks) pass
    without a token.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        verifier: Verifier,
        *,
        tenant_here: Optional[TenantHere] = None,
        exempt: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.tenant_here = tenant_here
        self.exempt = frozenset(exempt)

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in self.exempt:
            return self.app(environ, start_response)
        token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        if token is None:
            return self._answer(missing_token(), start_response)
        try:
            claims = self.verifier.verify(token)
        except VerifyError as e:
            return self._answer(refusal(e), start_response)
        if self.tenant_here is not None and not self.tenant_here(claims):
            cell = self.verifier.expect.cell
            return self._answer(wrong_cell(cell, cell), start_response)
        environ[CLAIMS_KEY] = claims
        return self.app(environ, start_response)

    @staticmethod
    def _answer(answer: Answer, start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, headers, body = answer
        start_response(
            f"{status} {_REASONS.get(status, '')}".rstrip(),
            [*headers, ("content-length", str(len(body)))],
        )
        return [body]
