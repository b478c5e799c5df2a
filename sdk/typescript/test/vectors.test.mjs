// Every case of sdk/vectors/*.json, which the Python SDK and the Rust crate run too.
import assert from "node:assert/strict";
import { readFileSync, existsSync } from "node:fs";
import { test } from "node:test";

import { Backoff, ClaimsError, Refresher, SplitMix64, WrongCell, readClaims, refreshLeadMs } from "../dist/index.js";
import { CODES, Expectations, KeySet, VerifyError } from "../dist/verify.js";

const dir = new URL("../../vectors/", import.meta.url);
function load(name) {
  const url = new URL(name, dir);
  assert.ok(existsSync(url), `missing test vectors ${url.pathname} (generate them with sdk/vectors/generate.py)`);
  return JSON.parse(readFileSync(url, "utf8"));
}

const TOKENS = load("tokens.json");
const JWKS = load("jwks.json");
const CLAIMS = load("claims.json");
const SIGNAL = load("wrong_cell.json");
const BACKOFF = load("backoff.json");
// The set has a skipped key and a duplicated kid (warned about); the
// jwks test below checks what is dropped.
const quiet = () => {};
const KEYS = await KeySet.fromJwks(TOKENS.jwks, quiet);

const expectations = (over = {}) => {
  const e = { ...TOKENS.expect, ...over };
  return new Expectations({ issuer: e.issuer, audience: e.audience, cell: e.cell, leeway: e.leeway, maxLifetime: e.max_lifetime });
};

test("the vectors cover every code", () => {
  const seen = new Set([...TOKENS.cases.map((c) => c.verdict), ...JWKS.cases.map((c) => c.error)]);
  for (const code of CODES) assert.ok(seen.has(code), code);
});

test("tokens", async (t) => {
  for (const c of TOKENS.cases) {
    await t.test(c.name, async () => {
      const expect = expectations(c.expect);
      const now = c.now ?? TOKENS.now;
      if (c.verdict === "valid") {
        assert.deepEqual(await KEYS.verify(c.token, expect, now), c.claims);
      } else {
        await assert.rejects(KEYS.verify(c.token, expect, now), (e) => {
          assert.ok(e instanceof VerifyError, String(e));
          assert.equal(e.code, c.verdict, e.message);
          return true;
        });
      }
    });
  }
});

test("jwks", async (t) => {
  for (const c of JWKS.cases) {
    await t.test(c.name, async () => {
      if (c.error) {
        await assert.rejects(KeySet.fromJwks(c.document, quiet), (e) => e instanceof VerifyError && e.code === c.error);
      } else {
        assert.deepEqual((await KeySet.fromJwks(c.document, quiet)).kids, c.keys);
      }
    });
  }
});

test("claims", async (t) => {
  for (const c of CLAIMS.cases) {
    await t.test(c.name, () => {
      if (c.error) {
        assert.throws(() => readClaims(c.token), (e) => e instanceof ClaimsError && e.kind === c.error);
      } else {
        const r = readClaims(c.token);
        assert.deepEqual({ tenant: r.tenant, cell: r.cell, iat: r.iat, exp: r.exp, map_version: r.mapVersion }, c.claims);
      }
    });
  }
});

const plain = (w) => (w === null ? null : { expected: w.expected, got: w.got, message: w.message });

test("wrong-cell signal over HTTP", async (t) => {
  for (const c of SIGNAL.http) {
    await t.test(c.name, async () => {
      assert.deepEqual(plain(WrongCell.fromHttp(c.status, c.body)), c.signal);
      assert.deepEqual(plain(WrongCell.fromHttp(c.status, new TextEncoder().encode(c.body))), c.signal);
      const resp = new Response(c.body, { status: c.status });
      assert.deepEqual(plain(await WrongCell.fromResponse(resp)), c.signal);
    });
  }
});

test("wrong-cell signal over gRPC", async (t) => {
  for (const c of SIGNAL.grpc) {
    await t.test(c.name, () => {
      const want = c.signal;
      const got = (w) => (w === null ? null : { expected: w.expected });
      assert.deepEqual(got(WrongCell.fromGrpc(c.code, c.trailers)), want);
      assert.deepEqual(got(WrongCell.fromGrpc(c.code, new Map(c.trailers))), want);
      assert.deepEqual(got(WrongCell.fromGrpc(c.code, { getMap: () => Object.fromEntries(c.trailers) })), want);
    });
  }
});

test("making the wrong-cell signal", () => {
  for (const c of SIGNAL.make) {
    const w = WrongCell.create(c.expected, c.got);
    assert.deepEqual(JSON.parse(w.httpBody()), c.body);
    assert.deepEqual(plain(WrongCell.fromHttp(c.status, w.httpBody())), plain(w));
    assert.deepEqual(w.grpcTrailers()[0], c.grpc.trailer);
    assert.equal(w.message, c.grpc.message);
  }
});

test("splitmix64", () => {
  for (const c of BACKOFF.splitmix64) {
    const g = new SplitMix64(BigInt(c.seed));
    assert.deepEqual(c.outputs.map(() => String(g.next())), c.outputs);
  }
});

test("backoff sequences", () => {
  for (const c of BACKOFF.sequences) {
    const g = new SplitMix64(BigInt(c.seed));
    const b = new Backoff(c.initial_ms, c.max_ms);
    for (const a of c.attempts) {
      const j = g.jitter();
      assert.equal(j, a.jitter);
      assert.equal(b.delayMs(a.n, j), a.delay_ms, `seed ${c.seed} attempt ${a.n}`);
    }
  }
  for (const c of BACKOFF.delays) {
    assert.equal(new Backoff(c.initial_ms, c.max_ms).delayMs(c.n, c.jitter), c.delay_ms, JSON.stringify(c));
  }
  for (const c of BACKOFF.refresh_lead) assert.equal(refreshLeadMs(c.lifetime_s), c.lead_ms);
});

test("refresher scripts", async (t) => {
  for (const c of BACKOFF.refresher) {
    await t.test(c.name, () => {
      const r = new Refresher(new Backoff(c.initial_ms, c.max_ms), BigInt(c.seed));
      c.steps.forEach((step, i) => {
        const where = `step ${i}: ${JSON.stringify(step).slice(0, 200)}`;
        switch (step.op) {
          case "next": {
            const a = r.next(step.now_ms);
            assert.equal(a.kind, step.expect.action, where);
            if (a.kind === "sleep") assert.equal(a.untilMs, step.expect.until_ms, where);
            if (a.kind === "send") assert.deepEqual([a.current.claims.cell, a.current.token], [step.expect.cell, step.expect.token], where);
            break;
          }
          case "fetched":
            if (step.ok) r.fetched(step.now_ms, step.token);
            else assert.throws(() => r.fetched(step.now_ms, step.token), ClaimsError, where);
            break;
          case "fetch_failed":
            r.fetchFailed(step.now_ms);
            break;
          case "served":
            r.served(step.now_ms);
            break;
          case "refused":
            r.refused(step.now_ms);
            break;
          default:
            assert.fail(`unknown op ${step.op}`);
        }
      });
    });
  }
});
