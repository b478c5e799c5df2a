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

import base64
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
    d0 = sdk.backoff_ms(0, 0.5)
    assert d0 == 0, f"backoff_ms(0) = {d0}: no wait before the first fetch"
    for n in range(1, 40):
        step = min(5000, 100 * 2 ** (n - 1))
        for jitter in [0.0, 0.5, 1 - 2.0 ** -53]:
            d = sdk.backoff_ms(n, jitter)
            assert step // 2 <= d <= step, (
                f"backoff_ms({n}, {jitter}) = {d}: outside [{step // 2}, {step}] "
                "(100 ms doubling to 5 s, jittered over the upper half)"
            )
    # The seeded test vectors of docs/sdk.md, also pinned by the Rust tests.
    rng = sdk.SplitMix64(0)
    got = [sdk.backoff_ms(n, rng.jitter()) for n in range(1, 11)]
    want = [94, 143, 205, 788, 885, 2123, 2934, 4428, 3114, 4880]
    assert got == want, f"seed 0 delays {got}, docs/sdk.md says {want}"
    rng = sdk.SplitMix64(7)
    got = [sdk.backoff_ms(n, rng.jitter(), 1, 10) for n in range(1, 7)]
    assert got == [0, 1, 3, 6, 7, 6], f"seed 7 delays (1 ms to 10 ms) {got}"
    for ttl, lead in [(900, 60), (10, 2)]:
        got = sdk.refresh_lead(ttl)
        assert got == lead, f"refresh_lead({ttl}) = {got}, want {lead}"
    stale_claims = sdk.read_claims(stale)
    b64 = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    claims = {"tenant": "acme", "cell": "A.Example.", "iat": 10, "map_version": "v"}
    cell = sdk.read_claims("h." + b64({**claims, "exp": 10 + 30 * 86400}) + ".s")["cell"]
    assert cell == "a.example", f"cell claim read as {cell!r}, want the canonical a.example"
    too_long = "h." + b64({**claims, "exp": 10 + 30 * 86400 + 1}) + ".s"
    for bad in ["a.b", "x.e30.y", too_long]:
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
