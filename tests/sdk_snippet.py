"""Run the Python snippet of docs/sdk.md against a real cellns and real cells.

usage: sdk_snippet.py SNIPPET CELLNS_URL API_KEY TENANT CELL_PORT HOSTS_JSON STALE_TOKEN

SNIPPET is the code block extracted from docs/sdk.md. HOSTS_JSON maps the
cells' hostnames to the addresses cellns DNS gave for them (the test
resolved them): name resolution is patched to use it, since the cells' zone
is not delegated on a test machine. STALE_TOKEN is a token the test minted
before it moved the tenant to another cell.

Checks the pure helpers, then runs a session that starts with the stale
token: the old cell must refuse it with the wrong-cell signal and the
session must reach the new cell with one more token. Prints a JSON report.
"""

import importlib.util
import json
import socket
import sys
import urllib.request


def main() -> int:
    snippet, cellns, api_key, tenant, port, hosts, stale = sys.argv[1:8]
    hosts = json.loads(hosts)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real_getaddrinfo(hosts.get(host, host), *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    # Loopback only: never through a proxy from the environment.
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))

    spec = importlib.util.spec_from_file_location("sdk", snippet)
    sdk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sdk)

    # The pure helpers.
    d0 = sdk.backoff_delay(0)
    assert d0 == 0.0, f"backoff_delay(0) = {d0}: no wait before the first fetch"
    for n in range(1, 40):
        step = min(5.0, 0.1 * 2 ** (n - 1))
        for _ in range(100):
            d = sdk.backoff_delay(n)
            assert step / 2 <= d <= step, (
                f"backoff_delay({n}) = {d}: outside [{step / 2}, {step}] "
                "(100 ms doubling to 5 s, jittered over the upper half)"
            )
    for ttl, lead in [(900, 60), (10, 2)]:
        got = sdk.refresh_lead(ttl)
        assert got == lead, f"refresh_lead({ttl}) = {got}, want {lead}"
    stale_claims = sdk.read_claims(stale)
    for bad in ["a.b", "x.e30.y"]:
        try:
            sdk.read_claims(bad)
        except (ValueError, KeyError, IndexError):
            pass
        else:
            raise AssertionError(f"read_claims accepted {bad!r}")

    # The stand-in auth service: the first login hands out the stale token
    # (as a client that kept its token across the move), later ones ask
    # cellns.
    logins = []

    def get_token():
        logins.append(1)
        if len(logins) == 1:
            return stale
        body = json.dumps({"tenant": tenant, "subject": "user-42", "ttl_seconds": 300}).encode()
        req = urllib.request.Request(
            f"{cellns}/v1/tokens",
            data=body,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)["token"]

    session = sdk.CellSession(get_token, int(port), scheme="http")
    first = session.request("/v1/whoami")
    second = session.request("/v1/whoami")
    print(json.dumps({
        "stale_claims": stale_claims,
        "served_by": first["cell"],
        "served_again_by": second["cell"],
        "fetches": session.fetches,
        "unserved": session.unserved,
        "current_cell": session.claims["cell"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
