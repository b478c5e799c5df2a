"""cellns-client: the client side of services routed by cellns.

Standard library only:

- :func:`read_claims`: a token's routing claims (``cell``: where to
  connect), read **without verifying** it;
- :class:`WrongCell`: the wrong-cell signal of a cell (HTTP 421 with the
  code ``wrong_cell``; gRPC status 9 with the ``cellns-wrong-cell`` trailer);
- :class:`Refresher`, :class:`Backoff`: the refresh rule with bounded,
  jittered backoff, as a state machine driven by the caller's clock;
- :class:`CellSession`: an HTTP client that follows the tenant's cell;
- :func:`resolve`, :func:`tenant_hostname`: DNS through the system resolver.

The cell side (verifying tokens, ASGI and WSGI middleware) is in
:mod:`cellns_client.verify`, :mod:`cellns_client.asgi` and
:mod:`cellns_client.wsgi`, which need the ``verify`` extra (PyJWT[crypto]).
The protocol is docs/sdk.md of the cellns repository.
"""

from .claims import (
    MAX_TOKEN_BYTES,
    MAX_TOKEN_LIFETIME,
    ClaimsError,
    TokenClaims,
    is_hostname,
    read_claims,
)
from .dns import Lookup, resolve, resolve_async, same_endpoint, tenant_hostname
from .refresh import (
    FETCH,
    SEND,
    SLEEP,
    Action,
    Backoff,
    CurrentToken,
    Refresher,
    SplitMix64,
    monotonic_ms,
    refresh_lead_ms,
)
from .session import CellSession, NoCellAccepts, Response
from .signal import (
    GRPC_WRONG_CELL_STATUS,
    GRPC_WRONG_CELL_TRAILER,
    WRONG_CELL_CODE,
    WRONG_CELL_STATUS,
    WrongCell,
)

__version__ = "0.1.0"

__all__ = [
    "FETCH",
    "GRPC_WRONG_CELL_STATUS",
    "GRPC_WRONG_CELL_TRAILER",
    "MAX_TOKEN_BYTES",
    "MAX_TOKEN_LIFETIME",
    "SEND",
    "SLEEP",
    "WRONG_CELL_CODE",
    "WRONG_CELL_STATUS",
    "Action",
    "Backoff",
    "CellSession",
    "ClaimsError",
    "CurrentToken",
    "Lookup",
    "NoCellAccepts",
    "Refresher",
    "Response",
    "SplitMix64",
    "TokenClaims",
    "WrongCell",
    "is_hostname",
    "monotonic_ms",
    "read_claims",
    "refresh_lead_ms",
    "resolve",
    "resolve_async",
    "same_endpoint",
    "tenant_hostname",
]
