"""End to end against the real cellns binary ($CELLNS_BIN): a token minted
by cellns verifies against its served JWKS (EdDSA, then ES256 after a key
rotation); a toy cell (WSGI and ASGI) refuses a token for another cell with
the wrong-cell signal; a client follows a tenant move with one refresh."""

from __future__ import annotations

import json
import urllib.request
from typing import Iterator

import pytest

from cellns_client import CellSession, WrongCell, read_claims
from cellns_client._b64 import decode as b64decode
from cellns_client.verify import Expectations, Verifier, VerifyError

from cellns_server import CELL_A, CELL_B, IP, TENANT, Cellns, query_a, wait_until
from cells import start_cells


@pytest.fixture
def cellns() -> Iterator[Cellns]:
    c = Cellns()
    yield c
    c.stop()


def test_minted_token_verifies_against_the_served_jwks(cellns: Cellns) -> None:
    answer = cellns.mint()
    assert answer["cell"] == CELL_A
    verifier = Verifier(cellns.jwks_url, Expectations("cellns", "cells", CELL_A))
    claims = verifier.verify(answer["token"])
    assert (claims["tenant"], claims["cell"], claims["map_version"]) == (TENANT, CELL_A, "sdk-1")
    assert read_claims(answer["token"]).cell == CELL_A
    # The cell next door refuses it as a token for another cell.
    with pytest.raises(VerifyError) as e:
        Verifier(cellns.jwks_url, Expectations("cellns", "cells", CELL_B)).verify(answer["token"])
    assert (e.value.code, e.value.expected, e.value.got) == ("wrong_cell", CELL_B, CELL_A)

    # Rotation to an ES256 key: the verifier meets an unknown kid and refetches.
    cellns.keygen("ES256")
    es = {}

    def es256_signs() -> bool:
        token = cellns.mint()["token"]
        es["token"] = token
        return json.loads(b64decode(token.split(".")[0]))["alg"] == "ES256"

    wait_until("cellns to sign with the new ES256 key", 20, es256_signs)

    def accepted(token: str) -> dict:
        try:
            return verifier.verify(token)
        except VerifyError as e:
            pytest.fail(
                f"a token minted by cellns was refused: {e.code}: {e} "
                "(ES256: the issuer must emit low-S signatures, see sdk/vectors/README.md)"
            )

    fetches = verifier.fetches
    assert accepted(es["token"])["tenant"] == TENANT
    assert verifier.fetches == fetches + 1
    # Every ES256 signature is in the low-S form the verifiers require (an
    # issuer that leaves S as its ECDSA library picks it fails half the time).
    for _ in range(8):
        accepted(cellns.mint()["token"])
    # The old EdDSA token still verifies: the old key is still published.
    verifier.verify(answer["token"])


def test_a_client_follows_a_move_within_one_refresh(cellns: Cellns) -> None:
    assert cellns.dns is not None
    dns = cellns.dns
    cell_a, cell_b = start_cells(cellns.jwks_url, dns)
    port = cell_a.port
    try:
        # A toy cell refuses a token for another cell with the wrong-cell signal.
        token = cellns.mint()["token"]
        req = urllib.request.Request(f"http://{IP['b']}:{port}/whoami", headers={"Authorization": f"Bearer {token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(req, timeout=10)
        signal = WrongCell.from_http(e.value.code, e.value.read())
        assert signal is not None and (signal.expected, signal.got) == (CELL_B, CELL_A)

        # The client resolves the token's cell through cellns (the system
        # resolver cannot be pointed at an ephemeral port).
        def base_url(cell: str) -> str:
            addrs = query_a(dns, cell)
            assert addrs, f"{cell} does not resolve"
            return f"http://{addrs[0]}:{port}"

        minted = []

        def get_token() -> str:
            minted.append(cellns.mint()["token"])
            return minted[-1]

        session = CellSession(get_token, base_url=base_url, opener=opener)
        first = session.get("/whoami")
        assert first.json() == {"cell": CELL_A, "tenant": TENANT}
        assert session.fetches == 1

        cellns.move("b", 2)
        second = session.get("/whoami")
        assert second.json() == {"cell": CELL_B, "tenant": TENANT}
        assert session.fetches == 2, "one refresh after the move"
        assert read_claims(minted[-1]).map_version == "sdk-2"
        assert session.refresher.unproductive_fetches == 0
        # And it stays there.
        assert session.get("/whoami").cell == CELL_B and session.fetches == 2
    finally:
        cell_a.close()
        cell_b.close()
