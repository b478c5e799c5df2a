#!/usr/bin/env python3
"""Generate the benchmark zone cells.example.test. with N tenants, the cellns
map that serves the same names, and the dnsperf query files.

Usage: gen_zone.py OUTDIR [N] [QUERIES] [SEED] [CELLS]
  OUTDIR/cells.example.test.zone   zone file (Knot, NSD, hickory-dns)
  OUTDIR/cellns-map.json           cellns map: the same names and record counts
  OUTDIR/q_hit.txt                 random existing tenant names, type A
  OUTDIR/q_nxdomain.txt            random non-existing names inside the zone, type A
  OUTDIR/q_refused.txt             names outside the zone (server is not authoritative)

Zone: SOA, NS ns1.cells.example.test. (glue A 192.0.2.1), and tenants
t000001..tN, each with 2 A + 1 AAAA, TTL 30 (as ../shared/bench/gen_zone.py).

cellns map: the same origin, nameserver, glue, hostmaster, TTLs (ttl,
negative_ttl and apex_ttl 30, SOA timers 3600/600/604800), placement
"nxdomain", CELLS cells c0000..c0999 (default 1000), each with 2 IPv4 + 1
IPv6 and an in-zone hostname c0NNN.cells.example.test., and tenant i assigned
to cell i % CELLS. So every tenant answers 2 A + 1 AAAA with TTL 30 like the
zone file; only the addresses differ (the cell's, not per-tenant ones),
which changes no record count or size. The SOA serial differs (cellns
numbers its own), its size does not.
"""
import json, os, random, sys

ORIGIN = "cells.example.test."


def cell_id(k):
    return f"c{k:04d}"


def cell_addrs(k):
    return ([f"10.255.{(k >> 8) & 255}.{k & 255}", f"100.127.{(k >> 8) & 255}.{k & 255}"],
            [f"2001:db8:ffff:{k & 0xffff:x}::1"])


def write_map(path, n, cells):
    """The cellns map (JSON) for n tenants over `cells` cells, streamed."""
    zone = {
        "origin": ORIGIN, "ttl": 30, "negative_ttl": 30, "apex_ttl": 30,
        "refresh": 3600, "retry": 600, "expire": 604800,
        "nameservers": ["ns1." + ORIGIN], "hostmaster": "hostmaster." + ORIGIN,
        "glue": {"ns1." + ORIGIN: ["192.0.2.1"]},
    }
    with open(path, "w") as f:
        w = f.write
        w('{\n "version": ' + json.dumps(f"bench-n{n}-c{cells}") + ',\n')
        w(' "zone": ' + json.dumps(zone) + ',\n "cells": {')
        for k in range(cells):
            v4, v6 = cell_addrs(k)
            c = {"hostname": f"{cell_id(k)}.{ORIGIN}", "ipv4": v4, "ipv6": v6,
                 "region": f"r{k % 4}", "status": "active", "weight": 100}
            w(("," if k else "") + "\n  " + json.dumps(cell_id(k)) + ": " + json.dumps(c))
        w('\n },\n "placement": {"unknown": "nxdomain"},\n "tenants": {')
        for i in range(1, n + 1):
            w(("," if i > 1 else "") + f'\n  "t{i:06d}": "{cell_id(i % cells)}"')
        w("\n }\n}\n")


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    nq = int(sys.argv[3]) if len(sys.argv) > 3 else 200000
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 42
    cells = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    rnd = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cells.example.test.zone"), "w") as f:
        w = f.write
        w(f"$ORIGIN {ORIGIN}\n$TTL 30\n")
        w("@ 30 IN SOA ns1.cells.example.test. hostmaster.cells.example.test. "
          "2024010101 3600 600 604800 30\n")
        w("@ 30 IN NS ns1.cells.example.test.\n")
        w("ns1 30 IN A 192.0.2.1\n")
        for i in range(1, n + 1):
            a1 = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            a2 = f"100.64.{(i >> 8) & 255}.{i & 255}"
            w(f"t{i:06d} 30 IN A {a1}\n")
            w(f"t{i:06d} 30 IN A {a2}\n")
            w(f"t{i:06d} 30 IN AAAA 2001:db8:{(i >> 16) & 0xffff:x}:{i & 0xffff:x}::1\n")
    write_map(os.path.join(out, "cellns-map.json"), n, cells)
    # The query streams are drawn from one generator in this order, exactly as
    # the reference harness does, so the files equal the reference ones.
    with open(os.path.join(out, "q_hit.txt"), "w") as f:
        for _ in range(nq):
            f.write(f"t{rnd.randint(1, n):06d}.{ORIGIN} A\n")
    with open(os.path.join(out, "q_nxdomain.txt"), "w") as f:
        # same shape as tenant names but numbered beyond N (never exist), plus
        # some 'x'-prefixed names so it is not only a tail-of-tree lookup
        for k in range(nq):
            if k % 2:
                f.write(f"t{rnd.randint(n + 1, n + 10 * n + 1000):06d}.{ORIGIN} A\n")
            else:
                f.write(f"x{rnd.randint(1, 10 * n):07d}.{ORIGIN} A\n")
    with open(os.path.join(out, "q_refused.txt"), "w") as f:
        for _ in range(nq):
            f.write(f"t{rnd.randint(1, n):06d}.other{rnd.randint(0, 99)}.example.org. A\n")


if __name__ == "__main__":
    main()
