"""The wrong-cell signal: "this cell does not serve this tenant; get a new
token and connect to the cell it names".

A cell sends it when the token's ``cell`` claim names another cell, or when
the tenant has moved away. Over HTTP it is status 421 with the JSON body
``{"error": {"code": "wrong_cell", "message": ..., "expected": ..., "got": ...}}``;
over gRPC it is status ``FAILED_PRECONDITION`` (9) with the trailer
``cellns-wrong-cell`` (docs/sdk.md). A client acts on the status **and** the
code (or trailer) together: a bare 421 is plain HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

from .claims import canonical_host

#: HTTP status of the signal: 421 Misdirected Request (RFC 9110 §15.5.20).
WRONG_CELL_STATUS = 421
#: ``error.code`` of the signal.
WRONG_CELL_CODE = "wrong_cell"
#: gRPC status code of the signal: FAILED_PRECONDITION.
GRPC_WRONG_CELL_STATUS = 9
#: gRPC trailing metadata key whose presence (with status 9) is the signal.
GRPC_WRONG_CELL_TRAILER = "cellns-wrong-cell"
#: Largest body :meth:`WrongCell.from_http` parses. A cell's signal is
#: under 1 KiB; a larger 421 body is something else.
MAX_SIGNAL_BODY = 64 * 1024

Trailers = Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None]


def wrong_cell_message(expected: str, got: str) -> str:
    """The human-readable text of the signal."""
    if expected == got:
        return f"the tenant is no longer served by {expected}: get a new token"
    return f"this is {expected}, the token is for {got}: get a new token"


@dataclass(frozen=True)
class WrongCell:
    """The wrong-cell signal."""

    #: The hostname of the cell that refused.
    expected: str
    #: The ``cell`` claim of the refused token (equal to ``expected`` when the tenant moved away).
    got: str
    #: For people and logs.
    message: str

    @classmethod
    def new(cls, expected: str, got: str) -> "WrongCell":
        """The signal of cell ``expected`` refusing a token for cell ``got``
        (both in canonical form: lowercase, one trailing dot removed)."""
        e, g = canonical_host(expected), canonical_host(got)
        return cls(expected=e, got=g, message=wrong_cell_message(e, g))

    def http_body(self) -> bytes:
        """The JSON body of the HTTP form (send with status 421 and
        ``Content-Type: application/json``)."""
        return json.dumps(
            {
                "error": {
                    "code": WRONG_CELL_CODE,
                    "message": self.message,
                    "expected": self.expected,
                    "got": self.got,
                }
            }
        ).encode()

    def http_headers(self) -> List[Tuple[str, str]]:
        """Headers of the HTTP form."""
        return [("content-type", "application/json"), ("cache-control", "no-store")]

    def grpc_trailers(self) -> List[Tuple[str, str]]:
        """Trailing metadata of the gRPC form (status 9, details :attr:`message`)."""
        return [(GRPC_WRONG_CELL_TRAILER, self.expected)]

    @classmethod
    def from_http(cls, status: int, body: Union[bytes, str, None]) -> Optional["WrongCell"]:
        """The signal in an HTTP response, if it is one: status 421 **and**
        a JSON body with ``error.code == "wrong_cell"``. ``expected``, ``got``
        and ``message`` are read when they are strings (else ``""``)."""
        if status != WRONG_CELL_STATUS or body is None or len(body) > MAX_SIGNAL_BODY:
            return None
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        err = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(err, dict) or err.get("code") != WRONG_CELL_CODE:
            return None

        def text(name: str) -> str:
            v = err.get(name)
            return v if isinstance(v, str) else ""

        return cls(expected=text("expected"), got=text("got"), message=text("message"))

    @classmethod
    def from_grpc(cls, code: Any, trailers: Trailers, details: str = "") -> Optional["WrongCell"]:
        """The signal in a gRPC status, if it is one: status 9 and the
        ``cellns-wrong-cell`` trailer. ``code`` is an ``int`` or a
        ``grpc.StatusCode``; ``trailers`` what the library gives
        (``call.trailing_metadata()``: pairs, or a mapping). The refused
        token's cell is not in the trailer: ``got`` is ``""``."""
        value = getattr(code, "value", code)  # grpc.StatusCode.X.value == (9, "...")
        if isinstance(value, tuple) and value:
            value = value[0]
        if value != GRPC_WRONG_CELL_STATUS or trailers is None:
            return None
        items = trailers.items() if isinstance(trailers, Mapping) else trailers
        for key, val in items:
            if isinstance(key, bytes):
                key = key.decode("latin-1")
            if isinstance(key, str) and key.lower() == GRPC_WRONG_CELL_TRAILER:
                if isinstance(val, bytes):
                    val = val.decode("utf-8", "replace")
                return cls(expected=str(val), got="", message=details)
        return None
