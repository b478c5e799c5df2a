"""What the ASGI and WSGI middleware share: reading the bearer token and
the answers a cell sends when it refuses one."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from .signal import WrongCell
from .verify import VerifyError

Answer = Tuple[int, List[Tuple[str, str]], bytes]
#: The claims go into the ASGI scope / WSGI environ under this key.
CLAIMS_KEY = "cellns.claims"
#: ``tenant_here(claims)``: does the tenant (still) live in this cell?
TenantHere = Callable[[Dict[str, Any]], Any]


def bearer_token(authorization: Optional[str]) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _json_error(status: int, code: str, message: str, extra: List[Tuple[str, str]]) -> Answer:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, [("content-type", "application/json"), ("cache-control", "no-store"), *extra], body


def missing_token() -> Answer:
    """401 for a request without a bearer token (RFC 6750 §3: no error code)."""
    return _json_error(
        401,
        "unauthenticated",
        "send the token as Authorization: Bearer <token>",
        [("www-authenticate", 'Bearer realm="cell"')],
    )


def refusal(err: VerifyError) -> Answer:
    """The answer to a token the verifier refused: the wrong-cell signal
    (421) for ``wrong_cell``, 503 when the keys cannot be fetched (retry
    later with the same token), else 401 with the verifier's code."""
    if err.code == "wrong_cell":
        return wrong_cell(err.expected, err.got)
    if err.code == "jwks_unavailable":
        return _json_error(503, err.code, "the cell cannot fetch the issuer's keys; retry later", [("retry-after", "5")])
    return _json_error(
        401,
        err.code,
        err.message,
        [("www-authenticate", f'Bearer realm="cell", error="invalid_token", error_description="{err.code}"')],
    )


def wrong_cell(expected: str, got: str) -> Answer:
    """The wrong-cell signal: 421 with the JSON body."""
    w = WrongCell.new(expected, got)
    return 421, w.http_headers(), w.http_body()
