"""Resolving a tenant's or a cell's hostname with the system resolver.

cellns is authoritative for the tenant zone, which is delegated to it, so
the ordinary resolver (``socket.getaddrinfo``) finds both names: the
``cell`` claim of a token (where an SDK connects) and the tenant's own name
``<tenant>.<zone>`` (the ``endpoint`` of the token answer, for clients that
route by DNS alone). Before and after a move both lead to the same endpoint:
:func:`same_endpoint` checks it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

from .claims import _is_label, canonical_host, is_hostname


@dataclass(frozen=True)
class Lookup:
    """The addresses a name resolved to."""

    #: The name that owns the addresses after CNAMEs (lowercase, no trailing
    #: dot), when the resolver reports it; else the name asked for.
    canonical: str
    #: IPv4 then IPv6 addresses, each family in the resolver's order, no duplicates.
    addrs: Tuple[str, ...]


def tenant_hostname(tenant: str, zone: str) -> str:
    """The tenant's own DNS name, ``<tenant>.<zone>`` (lowercase, no
    trailing dot). Raises ValueError for a tenant that is not one DNS label."""
    t, z = canonical_host(tenant), canonical_host(zone)
    if not _is_label(t):
        raise ValueError(f"tenant {tenant!r} is not one DNS label")
    if not is_hostname(z):
        raise ValueError(f"zone {zone!r} is not a hostname")
    name = f"{t}.{z}"
    if len(name) > 253:
        raise ValueError(f"{name!r} is longer than 253 bytes")
    return name


def _checked(host: str) -> str:
    name = canonical_host(host)
    if not is_hostname(name):
        raise ValueError(f"{host!r} is not a hostname")
    return name


def _lookup(name: str, infos: Sequence[Tuple[Any, ...]]) -> Lookup:
    v4: List[str] = []
    v6: List[str] = []
    canonical = ""
    for family, _type, _proto, canonname, sockaddr in infos:
        if canonname and not canonical:
            canonical = canonical_host(canonname)
        addr = str(ipaddress.ip_address(sockaddr[0].split("%")[0]))
        bucket = v4 if family == socket.AF_INET else v6
        if addr not in bucket:
            bucket.append(addr)
    return Lookup(canonical=canonical or name, addrs=tuple(v4 + v6))


def resolve(host: str, port: int = 443) -> Lookup:
    """Resolves ``host`` (a cell or tenant hostname) to its addresses with
    the system resolver. Raises ValueError for a name that is not a
    hostname and ``socket.gaierror`` when it does not resolve."""
    name = _checked(host)
    infos = socket.getaddrinfo(name, port, 0, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
    return _lookup(name, infos)


async def resolve_async(host: str, port: int = 443) -> Lookup:
    """:func:`resolve` without blocking the event loop."""
    name = _checked(host)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME)
    return _lookup(name, infos)


def same_endpoint(a: Lookup, b: Lookup) -> bool:
    """True when two lookups lead to the same endpoint: the same canonical
    name, or the same non-empty set of addresses. This is how "the tenant's
    DNS answer agrees with the token's cell" is checked."""
    if a.canonical == b.canonical:
        return True
    return bool(a.addrs) and set(a.addrs) == set(b.addrs)
