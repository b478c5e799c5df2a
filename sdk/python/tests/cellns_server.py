"""The real cellns for the end-to-end tests: started from $CELLNS_BIN on
ephemeral loopback ports, with a two-cell map whose cells live on 127.0.0.2
and 127.0.0.3; plus the small DNS client the toy cells and the client use
to ask it (the system resolver cannot be pointed at an ephemeral port)."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import pytest

ZONE = "cells.sdk.test"
CELL_A = f"a.{ZONE}"
CELL_B = f"b.{ZONE}"
IP = {"a": "127.0.0.2", "b": "127.0.0.3"}
HOST = {"a": CELL_A, "b": CELL_B}
TENANT = "acme"
API_KEY = "sdk-e2e-key-0123456789abcdef"


def wait_until(what: str, deadline_s: float, cond: Callable[[], bool]) -> None:
    """Polls ``cond`` until it holds; fails naming ``what`` after the deadline
    (sized for a loaded 2-core machine)."""
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.02)


def demo_map(on: str, version: int) -> str:
    return (
        f'version = "sdk-{version}"\n'
        f'[zone]\norigin = "{ZONE}."\nttl = 1\nnameservers = ["ns1.{ZONE}."]\n'
        f'hostmaster = "hostmaster.{ZONE}."\n'
        f'[zone.glue]\n"ns1.{ZONE}." = ["127.0.0.1"]\n'
        f'[cells.a]\nhostname = "{CELL_A}."\nipv4 = ["{IP["a"]}"]\nregion = "sdk"\n'
        f'[cells.b]\nhostname = "{CELL_B}."\nipv4 = ["{IP["b"]}"]\nregion = "sdk"\n'
        f'[tenants]\n{TENANT} = "{on}"\n'
        "[safety]\nmax_moved_fraction = 1.0\n"
    )


def binary() -> str:
    path = os.environ.get("CELLNS_BIN")
    if not path:
        pytest.fail("CELLNS_BIN is not set: point it at the cellns binary (scripts/test sets it to target/debug/cellns)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"CELLNS_BIN={path} is not an executable file (build it: cargo build)")
    return path


class Cellns:
    """A running ``cellns serve``."""

    def __init__(self) -> None:
        self.bin = binary()
        self.dir = tempfile.TemporaryDirectory(prefix="cellns-sdk-py-")
        d = Path(self.dir.name)
        self.map = d / "map.toml"
        self.map.write_text(demo_map("a", 1))
        self.keys = d / "keys"
        self.keygen("EdDSA")
        api = d / "api-keys"
        api.write_text(f"auth sha256:{hashlib.sha256(API_KEY.encode()).hexdigest()}\n")
        self.logs: List[str] = []
        self.proc = subprocess.Popen(
            [
                self.bin, "--log-format", "json", "serve",
                "--dns-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                "--map", str(self.map), "--signing-keys", str(self.keys), "--api-keys", str(api),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "RUST_LOG": "info"},
            text=True,
        )
        lines: "queue.Queue[str]" = queue.Queue()

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.logs.append(line.rstrip("\n"))
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        self.http: Optional[Tuple[str, int]] = None
        self.dns: Optional[Tuple[str, int]] = None
        end = time.monotonic() + 30
        while self.http is None or self.dns is None:
            try:
                line = lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail("cellns did not log its HTTP and DNS addresses within 30 s; logs:\n" + "\n".join(self.logs))
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            msg, addr = str(rec.get("message", "")), rec.get("addr")
            if addr is None:
                addr = rec.get("fields", {}).get("addr")
            if addr and msg.startswith("HTTP listening"):
                self.http = _addr(addr)
            elif addr and msg.startswith("DNS listening"):
                self.dns = _addr(addr)
        self.base = f"http://{self.http[0]}:{self.http[1]}"
        self.jwks_url = f"{self.base}/.well-known/jwks.json"

    def keygen(self, alg: str) -> None:
        out = subprocess.run(
            [self.bin, "keygen", "--out", str(self.keys), "--alg", alg], capture_output=True, text=True, timeout=30
        )
        if out.returncode != 0:
            pytest.fail(f"cellns keygen failed: {out.stderr}")

    def mint(self, tenant: str = TENANT, ttl: int = 900) -> dict:
        """POST /v1/tokens, as an auth service does."""
        body = json.dumps({"tenant": tenant, "subject": "user-42", "ttl_seconds": ttl}).encode()
        req = urllib.request.Request(
            f"{self.base}/v1/tokens",
            data=body,
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.load(resp)

    def move(self, to: str, version: int) -> None:
        """Moves the tenant to cell ``to`` as a control plane does (a new file
        renamed over the map), and waits until cellns answers with it."""
        tmp = self.map.with_suffix(".tmp")
        tmp.write_text(demo_map(to, version))
        os.replace(tmp, self.map)
        assert self.dns is not None
        wait_until(
            f"cellns to answer {TENANT}.{ZONE} with cell {to}",
            20,
            lambda: query_a(self.dns, f"{TENANT}.{ZONE}") == [IP[to]],  # type: ignore[arg-type]
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.dir.cleanup()


def _addr(text: str) -> Tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def query_a(server: Tuple[str, int], name: str, timeout: float = 2.0) -> List[str]:
    """The A records of ``name`` from ``server`` (one UDP query, no cache):
    [] for NXDOMAIN or no answer."""
    qid = random.randrange(1 << 16)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(server)
        s.send(q)
        while True:
            msg = s.recv(4096)
            if len(msg) >= 12 and struct.unpack(">H", msg[:2])[0] == qid:
                break
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    if flags & 0xF:
        return []
    pos = 12
    for _ in range(qd):
        pos = _skip_name(msg, pos) + 4
    out = []
    for _ in range(an):
        pos = _skip_name(msg, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[pos : pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(msg[pos : pos + 4]))
        pos += rdlen
    return out


def _skip_name(msg: bytes, pos: int) -> int:
    while True:
        n = msg[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + n
