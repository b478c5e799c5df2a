// createCellFetch against two local cells: following the wrong-cell signal
// with one fetch, the backoff and the give-up bound, 401, unreachable cells.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { NoCellAccepts, WrongCell, createCellFetch, readClaims } from "../dist/index.js";
import { scripted } from "./helpers.mjs";

const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const token = (cell, n) =>
  `${enc({ alg: "EdDSA", kid: "k" })}.${enc({ tenant: "acme", cell, iat: 1000, exp: 1900, map_version: `v${n}`, jti: String(n) })}.${"A".repeat(86)}`;

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function cells() {
  const out = {};
  for (const name of ["a.test", "b.test"]) {
    const state = { mode: "serve" };
    const s = await scripted((req) => {
      const cell = readClaims(req.headers.authorization.replace(/^Bearer /, "")).cell;
      if (state.mode === "plain421") {
        state.mode = "serve";
        return { status: 421 };
      }
      if (cell !== name || state.mode === "refuse") {
        const w = WrongCell.create(name, cell);
        return { status: 421, headers: w.httpHeaders(), body: w.httpBody() };
      }
      if (state.mode === "401") return { status: 401, body: '{"error":{"code":"expired"}}' };
      return { body: JSON.stringify({ cell: name, path: req.url }) };
    });
    servers.push(s);
    out[name] = Object.assign(state, { url: s.url });
  }
  return out;
}

function client(c, tokens, extra = {}) {
  const clock = { ms: 0, sleeps: [] };
  let i = 0;
  const f = createCellFetch({
    getToken: async () => tokens[i++],
    baseUrl: (cell) => c[cell]?.url ?? "http://127.0.0.1:1",
    now: () => clock.ms,
    sleep: async (ms) => {
      clock.sleeps.push(ms);
      clock.ms += ms;
    },
    seed: 1n,
    ...extra,
  });
  return { f, clock };
}

test("follows a move with one immediate fetch", async () => {
  const c = await cells();
  const { f, clock } = client(c, [token("a.test", 1), token("b.test", 2)]);
  assert.deepEqual(await (await f("/x")).json(), { cell: "a.test", path: "/x" });
  c["a.test"].mode = "refuse";
  const r = await f("/y");
  assert.deepEqual(await r.json(), { cell: "b.test", path: "/y" });
  assert.equal(f.fetches, 2);
  assert.deepEqual(clock.sleeps, []);
  assert.equal(f.refresher.unproductiveFetches, 0);
});

test("gives up after maxFetches, with the backoff between fetches", async () => {
  const c = await cells();
  c["a.test"].mode = "refuse";
  const { f, clock } = client(c, Array.from({ length: 10 }, (_, n) => token("a.test", n)), { maxFetches: 4 });
  await assert.rejects(f("/x"), (e) => e instanceof NoCellAccepts && /4 token/.test(e.message));
  assert.equal(f.fetches, 4);
  assert.equal(clock.sleeps.length, 3);
  clock.sleeps.forEach((ms, i) => {
    const step = Math.min(5000, 100 * 2 ** i);
    assert.ok(ms >= step / 2 && ms <= step, `${i}: ${ms}`);
  });
});

test("401 and unreachable cells mean a new token; a bare 421 is retried once", async () => {
  const c = await cells();
  c["a.test"].mode = "401";
  const { f } = client(c, [token("a.test", 1), token("gone.test", 2), token("b.test", 3)]);
  assert.equal((await (await f("/x")).json()).cell, "b.test");
  assert.equal(f.fetches, 3);
  c["b.test"].mode = "plain421";
  assert.equal((await f("/x")).status, 200);
  assert.equal(f.fetches, 3);
});

test("concurrent requests share one token fetch", async () => {
  const c = await cells();
  let fetched = 0;
  const f = createCellFetch({
    getToken: async () => {
      fetched++;
      await new Promise((r) => setTimeout(r, 20));
      return token("a.test", fetched);
    },
    baseUrl: (cell) => c[cell].url,
  });
  const rs = await Promise.all(Array.from({ length: 8 }, () => f("/x")));
  assert.ok(rs.every((r) => r.status === 200));
  assert.equal(fetched, 1);
});

test("an auth service that fails is bounded too", async () => {
  const { f, clock } = client({}, [], { getToken: async () => { throw new Error("auth down"); }, maxFetches: 3 });
  await assert.rejects(f("/x"), (e) => e instanceof NoCellAccepts && e.cause.message === "auth down");
  assert.equal(clock.sleeps.length, 2);
});
