#!/usr/bin/env python3
"""Weighted rendezvous placement, written from docs/placement.md alone.

An independent implementation of how cellns places unlisted tenants
(`placement.unknown = "hash"`), used by the end-to-end tests to check the
server: it must agree on every tenant.

Usage: placement.py < request.json > placement.json, where the request is
{"cells": [{"id": "c1", "weight": 100}, ...], "tenants": ["t1", ...]} with the
cells of the hash pool in map order, and the answer maps each tenant to the id
of the cell that wins it (null when the pool is empty).
"""

import json
import sys

MASK = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def label_hash(s):
    h = 0xCBF29CE484222325
    for b in s.encode("ascii").lower():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return mix64(h)


def neg_log2_q32(x):
    v = ((x >> 11) << 1) | 1
    integer = v.bit_length() - 1
    y = v << (62 - integer)
    frac = 0
    for _ in range(32):
        y = (y * y) >> 62
        frac <<= 1
        if y >= 1 << 63:
            y >>= 1
            frac |= 1
    return (54 << 32) - ((integer << 32) | frac)


def place(cells, tenant):
    """The id of the cell that wins `tenant`, or None for an empty pool."""
    h = label_hash(tenant)
    best = None  # (weight, denominator, id)
    for cell in cells:
        w = cell["weight"]
        d = neg_log2_q32(mix64(h ^ label_hash(cell["id"])))
        if best is None or w * best[1] > best[0] * d:
            best = (w, d, cell["id"])
    return None if best is None else best[2]


def main():
    req = json.load(sys.stdin)
    pool = [c for c in req["cells"] if c["weight"] > 0]
    json.dump({t: place(pool, t) for t in req["tenants"]}, sys.stdout)


if __name__ == "__main__":
    main()
