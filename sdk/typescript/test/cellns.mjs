// The real cellns for the end-to-end tests: started from $CELLNS_BIN on
// ephemeral loopback ports with a two-cell map whose cells live on 127.0.0.2
// and 127.0.0.3; plus a small DNS client to ask it (the system resolver cannot
// be pointed at an ephemeral port).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomInt } from "node:crypto";
import { createSocket } from "node:dgram";
import { accessSync, constants, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

export const ZONE = "cells.sdk.test";
export const CELL = { a: `a.${ZONE}`, b: `b.${ZONE}` };
export const IP = { a: "127.0.0.2", b: "127.0.0.3" };
export const TENANT = "acme";
const API_KEY = "sdk-e2e-key-0123456789abcdef";

/** Polls `cond` until it holds; fails naming `what` after the deadline. */
export async function waitUntil(what, deadlineMs, cond) {
  const end = performance.now() + deadlineMs;
  while (!(await cond())) {
    if (performance.now() > end) assert.fail(`timed out after ${deadlineMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function demoMap(on, version) {
  return [
    `version = "sdk-${version}"`,
    `[zone]`, `origin = "${ZONE}."`, `ttl = 1`, `nameservers = ["ns1.${ZONE}."]`, `hostmaster = "hostmaster.${ZONE}."`,
    `[zone.glue]`, `"ns1.${ZONE}." = ["127.0.0.1"]`,
    `[cells.a]`, `hostname = "${CELL.a}."`, `ipv4 = ["${IP.a}"]`, `region = "sdk"`,
    `[cells.b]`, `hostname = "${CELL.b}."`, `ipv4 = ["${IP.b}"]`, `region = "sdk"`,
    `[tenants]`, `${TENANT} = "${on}"`,
    `[safety]`, `max_moved_fraction = 1.0`, ``,
  ].join("\n");
}

function binary() {
  const path = process.env.CELLNS_BIN;
  assert.ok(path, "CELLNS_BIN is not set: point it at the cellns binary (scripts/test sets it to target/debug/cellns)");
  try {
    accessSync(path, constants.X_OK);
  } catch {
    assert.fail(`CELLNS_BIN=${path} is not an executable file (build it: cargo build)`);
  }
  return path;
}

const addr = (s) => {
  const i = s.lastIndexOf(":");
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(s.slice(i + 1)) };
};

/** Starts `cellns serve`; resolves once it has logged its HTTP and DNS addresses. */
export async function startCellns() {
  const bin = binary();
  const dir = mkdtempSync(join(tmpdir(), "cellns-sdk-ts-"));
  const map = join(dir, "map.toml");
  writeFileSync(map, demoMap("a", 1));
  const keys = join(dir, "keys");
  const keygen = (alg) => execFileSync(bin, ["keygen", "--out", keys, "--alg", alg], { stdio: "pipe", timeout: 30_000 });
  keygen("EdDSA");
  const api = join(dir, "api-keys");
  writeFileSync(api, `auth sha256:${createHash("sha256").update(API_KEY).digest("hex")}\n`);
  const proc = spawn(
    bin,
    ["--log-format", "json", "serve", "--dns-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
      "--map", map, "--signing-keys", keys, "--api-keys", api],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "info" } },
  );
  const logs = [];
  const found = {};
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cellns did not log its addresses within 30 s; logs:\n${logs.join("\n")}`)), 30_000);
    proc.once("exit", (code) => reject(new Error(`cellns exited (${code}); logs:\n${logs.join("\n")}`)));
    createInterface({ input: proc.stderr }).on("line", (line) => {
      logs.push(line);
      let rec;
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      const a = rec.addr ?? rec.fields?.addr;
      const msg = String(rec.message ?? rec.fields?.message ?? "");
      if (a && msg.startsWith("HTTP listening")) found.http = addr(a);
      if (a && msg.startsWith("DNS listening")) found.dns = addr(a);
      if (found.http && found.dns) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  proc.removeAllListeners("exit");
  const base = `http://${found.http.host}:${found.http.port}`;
  const c = {
    dns: found.dns,
    base,
    jwksUrl: `${base}/.well-known/jwks.json`,
    logs,
    keygen,
    /** POST /v1/tokens, as an auth service does. */
    async mint(tenant = TENANT, ttl = 900) {
      const r = await fetch(`${base}/v1/tokens`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ tenant, subject: "user-42", ttl_seconds: ttl }),
      });
      assert.equal(r.status, 200, await r.clone().text());
      return r.json();
    },
    /** Moves the tenant to cell `to` (a new file renamed over the map) and waits until cellns answers with it. */
    async move(to, version) {
      writeFileSync(`${map}.tmp`, demoMap(to, version));
      renameSync(`${map}.tmp`, map);
      await waitUntil(`cellns to answer ${TENANT}.${ZONE} with cell ${to}`, 20_000, async () => {
        const a = await queryA(found.dns, `${TENANT}.${ZONE}`);
        return a.length === 1 && a[0] === IP[to];
      });
    },
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGKILL");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return c;
}

/** The A records of `name` from `server` (one UDP query, no cache): [] for NXDOMAIN. */
export function queryA(server, name, timeoutMs = 2000) {
  const id = randomInt(1 << 16);
  const labels = name.replace(/\.$/, "").split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const q = Buffer.concat([
    Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...labels,
    Buffer.from([0, 0, 1, 0, 1]),
  ]);
  return new Promise((resolve, reject) => {
    const sock = createSocket("udp4");
    const timer = setTimeout(() => {
      sock.close();
      reject(new Error(`no DNS answer for ${name} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on("message", (msg) => {
      if (msg.length < 12 || msg.readUInt16BE(0) !== id) return;
      clearTimeout(timer);
      sock.close();
      if ((msg.readUInt16BE(2) & 0xf) !== 0) return resolve([]);
      const qd = msg.readUInt16BE(4);
      const an = msg.readUInt16BE(6);
      let pos = 12;
      const skip = () => {
        for (;;) {
          const n = msg[pos];
          if (n === 0) return (pos += 1);
          if ((n & 0xc0) === 0xc0) return (pos += 2);
          pos += 1 + n;
        }
      };
      for (let i = 0; i < qd; i++) {
        skip();
        pos += 4;
      }
      const out = [];
      for (let i = 0; i < an; i++) {
        skip();
        const type = msg.readUInt16BE(pos);
        const len = msg.readUInt16BE(pos + 8);
        pos += 10;
        if (type === 1 && len === 4) out.push([...msg.subarray(pos, pos + 4)].join("."));
        pos += len;
      }
      resolve(out);
    });
    sock.send(q, server.port, server.host);
  });
}
