// The remote JWKS cache of Verifier: Cache-Control, refetch on unknown kid at
// most once per interval, cached keys kept when a refresh fails, size cap.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { Expectations, KeySet, Verifier, VerifyError, cacheMs } from "../dist/verify.js";
import { load, scripted } from "./helpers.mjs";

const V = load("tokens.json");
const NOW = V.now;
const T = Object.fromEntries(V.cases.map((c) => [c.name, c.token]));
// The signers; the set also has a skipped key and a duplicated kid (README).
const [ED, ES] = V.jwks.keys;
const EXPECT = { issuer: "cellns", audience: "cells", cell: V.expect.cell };
const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function jwks(keys, cacheControl = "public, max-age=60") {
  const state = { doc: JSON.stringify({ keys }), status: 200, cacheControl };
  const s = await scripted(() => ({
    status: state.status,
    headers: { "content-type": "application/json", "cache-control": state.cacheControl },
    body: state.doc,
  }));
  servers.push(s);
  state.url = `${s.url}/jwks`;
  state.fetches = () => s.requests.length;
  state.publish = (k) => (state.doc = JSON.stringify({ keys: k }));
  return state;
}

const quiet = () => {};
const verifier = (j, clock, extra = {}) =>
  Verifier.fromJwksUrl(j.url, EXPECT, { clock: () => clock.ms, wallClock: () => NOW, onRefreshError: quiet, ...extra });
const rejectsWith = (p, code) => assert.rejects(p, (e) => e instanceof VerifyError && e.code === code);

test("fetches once and serves from the cache", async () => {
  const j = await jwks([ED, ES]);
  const v = await verifier(j, { ms: 0 });
  for (let i = 0; i < 5; i++) {
    assert.equal((await v.verify(T.eddsa_valid)).tenant, "acme");
    assert.equal((await v.verify(T.es256_valid)).cell, EXPECT.cell);
  }
  assert.equal(j.fetches(), 1);
  assert.deepEqual(v.kids, { [ED.kid]: "EdDSA", [ES.kid]: "ES256" });
});

test("an unknown kid refetches at most once per interval", async () => {
  const clock = { ms: 1_000_000 };
  const j = await jwks([ED], "max-age=3600");
  const v = await verifier(j, clock);
  j.publish([ED, ES]); // rotation after the verifier started
  assert.equal((await v.verify(T.es256_valid)).tenant, "acme");
  assert.equal(j.fetches(), 2);
  for (let i = 0; i < 20; i++) await rejectsWith(v.verify(T.eddsa_unknown_kid), "unknown_kid");
  assert.equal(j.fetches(), 2);
  clock.ms += 9_999;
  await rejectsWith(v.verify(T.eddsa_unknown_kid), "unknown_kid");
  assert.equal(j.fetches(), 2);
  clock.ms += 1;
  await Promise.all(Array.from({ length: 20 }, () => rejectsWith(v.verify(T.eddsa_unknown_kid), "unknown_kid")));
  assert.equal(j.fetches(), 3);
  await v.verify(T.eddsa_valid);
  assert.equal(j.fetches(), 3);
});

test("max-age is respected", async () => {
  const clock = { ms: 0 };
  const j = await jwks([ED], "public, max-age=60");
  const v = await verifier(j, clock);
  clock.ms = 59_999;
  await v.verify(T.eddsa_valid);
  assert.equal(j.fetches(), 1);
  clock.ms = 60_000;
  await v.verify(T.eddsa_valid);
  assert.equal(j.fetches(), 2);
  // A removed key stops verifying once the cache has expired.
  j.publish([ES]);
  clock.ms = 120_000;
  await v.verify(T.es256_valid);
  await rejectsWith(v.verify(T.eddsa_valid), "unknown_kid");
});

test("cacheMs", () => {
  assert.equal(cacheMs("public, max-age=60", 300_000, 10_000), 60_000);
  assert.equal(cacheMs('max-age="120"', 300_000, 10_000), 120_000);
  assert.equal(cacheMs("s-maxage=5, max-age=90", 300_000, 10_000), 90_000);
  assert.equal(cacheMs(null, 300_000, 10_000), 300_000);
  assert.equal(cacheMs("max-age=0", 300_000, 10_000), 10_000);
  assert.equal(cacheMs("no-store", 300_000, 10_000), 10_000);
  assert.equal(cacheMs("max-age=99999999", 300_000, 10_000), 86_400_000);
});

test("a failed refresh keeps the cached keys", async () => {
  const clock = { ms: 0 };
  const j = await jwks([ED], "max-age=60");
  const errors = [];
  const v = await verifier(j, clock, { onRefreshError: (e) => errors.push(e.message) });
  j.status = 500;
  clock.ms = 61_000;
  assert.equal((await v.verify(T.eddsa_valid)).tenant, "acme");
  assert.equal(j.fetches(), 2);
  assert.match(v.lastError, /500/);
  assert.equal(errors.length, 1);
  await v.verify(T.eddsa_valid);
  assert.equal(j.fetches(), 2, "retried after the interval, not per token");
  j.status = 200;
  clock.ms += 10_000;
  await v.verify(T.eddsa_valid);
  assert.equal(j.fetches(), 3);
  assert.equal(v.lastError, null);
});

test("a bad key is skipped and told, the others verify", async () => {
  // Issue 15: one malformed key used to make the whole set refused.
  const broken = { ...ED, kid: "broken", x: "AAAA" };
  const twice = [{ ...ES, kid: "twice" }, { ...ED, kid: "twice" }];
  const j = await jwks([broken, ED, ...twice, ES]);
  const dropped = [];
  const errors = [];
  const clock = { ms: 0 };
  const v = await verifier(j, clock, { onKeyDropped: (m) => dropped.push(m), onRefreshError: (e) => errors.push(e.message) });
  assert.deepEqual(v.kids, { [ED.kid]: "EdDSA", [ES.kid]: "ES256" });
  assert.equal(v.lastError, null);
  assert.equal((await v.verify(T.eddsa_valid)).tenant, "acme");
  assert.equal((await v.verify(T.es256_valid)).tenant, "acme");
  assert.equal(dropped.length, 2, dropped.join("\n"));
  assert.ok(dropped.some((m) => m.includes('"broken" skipped')), dropped.join("\n"));
  assert.ok(dropped.some((m) => m.includes('"twice" published 2 times')), dropped.join("\n"));
  // Only a document that is not a key set is a failed refresh.
  j.doc = '{"keys": {}}';
  clock.ms = 61_000;
  await v.verify(T.eddsa_valid);
  assert.match(v.lastError, /keys/);
  assert.equal(errors.length, 1);
});

test("the JWKS size is capped", async () => {
  const big = JSON.stringify({ keys: [ED], pad: "x".repeat(2000) });
  for (const headers of [{ "content-length": String(big.length) }, {}]) {
    const s = await scripted(() => ({ headers, body: big }));
    servers.push(s);
    await assert.rejects(Verifier.fromJwksUrl(s.url, EXPECT, { maxJwksBytes: 1024, onRefreshError: quiet }), (e) => e.code === "jwks_unavailable" && /1024/.test(e.message));
    await Verifier.fromJwksUrl(s.url, EXPECT, { maxJwksBytes: 4096 });
  }
});

test("unreachable, lazy, and malformed tokens without fetches", async () => {
  await rejectsWith(Verifier.fromJwksUrl("http://127.0.0.1:1/jwks", EXPECT, { onRefreshError: quiet }), "jwks_unavailable");
  const v = await Verifier.fromJwksUrl("http://127.0.0.1:1/jwks", EXPECT, { lazy: true, onRefreshError: quiet, wallClock: () => NOW });
  await rejectsWith(v.verify(T.eddsa_valid), "jwks_unavailable");
  const n = v.fetches;
  await rejectsWith(v.verify("not a token"), "malformed");
  assert.equal(v.fetches, n);
});

test("fixed key sets and bounded settings", async () => {
  const v = Verifier.fromKeySet(await KeySet.fromJwks(V.jwks, quiet), EXPECT, { wallClock: () => NOW });
  assert.equal(v.url, null);
  assert.equal((await v.verify(T.es256_valid)).tenant, "acme");
  await assert.rejects(v.verify(T.eddsa_wrong_cell), (e) => e.code === "wrong_cell" && e.expected === EXPECT.cell && e.got === "use1-b.cells.example.com");
  for (const leeway of [301, -1, 1.5]) assert.throws(() => new Expectations({ ...EXPECT, leeway }), RangeError);
  assert.throws(() => new Expectations({ ...EXPECT, maxLifetime: 0 }), RangeError);
  assert.throws(() => new Expectations({ ...EXPECT, cell: "" }), RangeError);
  new Expectations({ ...EXPECT, leeway: 300 });
});
