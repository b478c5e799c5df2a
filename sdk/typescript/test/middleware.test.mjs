// The Express-style middleware on a node:http server: claims to the handler,
// the wrong-cell signal (421), 401 for missing/invalid tokens, 503 without keys.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, test } from "node:test";

import { WrongCell } from "../dist/index.js";
import { cellnsMiddleware, bearerToken } from "../dist/express.js";
import { KeySet, Verifier } from "../dist/verify.js";
import { load } from "./helpers.mjs";

const V = load("tokens.json");
const T = Object.fromEntries(V.cases.map((c) => [c.name, c.token]));
const EXPECT = { issuer: "cellns", audience: "cells", cell: V.expect.cell };
const moved = new Set();
const servers = [];
after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

async function cell(verifier) {
  const mw = cellnsMiddleware(verifier, { tenantHere: async (c) => !moved.has(c.tenant), exempt: ["/healthz"] });
  const server = createServer((req, res) =>
    mw(req, res, (err) => {
      if (err) {
        res.statusCode = 500;
        return res.end(String(err));
      }
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ tenant: req.cellns?.tenant ?? null }));
    }),
  );
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  return `http://127.0.0.1:${server.address().port}`;
}

const fixed = Verifier.fromKeySet(await KeySet.fromJwks(V.jwks, () => {}), EXPECT, { wallClock: () => V.now });
const base = await cell(fixed);
const get = (token, path = "/v1/whoami", url = base) =>
  fetch(url + path, { headers: token ? { authorization: `Bearer ${token}` } : {} });

test("a valid token reaches the handler with its claims", async () => {
  const r = await get(T.eddsa_valid);
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { tenant: "acme" });
});

test("a token for another cell gets the wrong-cell signal", async () => {
  const r = await get(T.es256_wrong_cell);
  assert.equal(r.status, 421);
  assert.equal(r.headers.get("content-type"), "application/json");
  const w = await WrongCell.fromResponse(r);
  assert.deepEqual([w.expected, w.got], [EXPECT.cell, "use1-b.cells.example.com"]);
});

test("a tenant that moved away gets the wrong-cell signal", async () => {
  moved.add("acme");
  try {
    const w = await WrongCell.fromResponse(await get(T.eddsa_valid));
    assert.equal(w.expected, EXPECT.cell);
    assert.equal(w.got, EXPECT.cell);
    assert.match(w.message, /no longer served/);
  } finally {
    moved.delete("acme");
  }
});

test("missing and invalid tokens get 401", async () => {
  let r = await get(null);
  assert.equal(r.status, 401);
  assert.match(r.headers.get("www-authenticate"), /^Bearer/);
  assert.equal((await r.json()).error.code, "unauthenticated");
  for (const [name, code] of [["eddsa_expired", "expired"], ["es256_high_s_twin", "non_canonical_signature"], ["alg_none", "alg_none"]]) {
    r = await get(T[name]);
    assert.equal(r.status, 401, name);
    assert.match(r.headers.get("www-authenticate"), /error="invalid_token"/);
    assert.equal((await r.json()).error.code, code);
  }
  assert.equal((await get(null, "/healthz")).status, 200);
  assert.equal(bearerToken("Basic abc"), null);
  assert.equal(bearerToken(" bearer  tok "), "tok");
});

test("no keys: 503", async () => {
  const lazy = await Verifier.fromJwksUrl("http://127.0.0.1:1/jwks", EXPECT, { lazy: true, onRefreshError: () => {} });
  const url = await cell(lazy);
  const r = await get(T.eddsa_valid, "/v1/whoami", url);
  assert.equal(r.status, 503);
  assert.equal((await r.json()).error.code, "jwks_unavailable");
  assert.ok(r.headers.get("retry-after"));
});
