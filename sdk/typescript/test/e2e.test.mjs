// End to end against the real cellns binary ($CELLNS_BIN): a token minted by
// cellns verifies against its served JWKS (EdDSA, then ES256 after a key
// rotation); a toy cell (node:http + the Express-style middleware) refuses a
// token for another cell with the wrong-cell signal; a client (the fetch
// wrapper) follows a tenant move with one refresh.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { WrongCell, createCellFetch, readClaims } from "../dist/index.js";
import { cellnsMiddleware } from "../dist/express.js";
import { Verifier, VerifyError } from "../dist/verify.js";
import { CELL, IP, TENANT, ZONE, queryA, startCellns, waitUntil } from "./cellns.mjs";

const expect = (cell) => ({ issuer: "cellns", audience: "cells", cell });

test("a minted token verifies against the served JWKS", async (t) => {
  const cellns = await startCellns();
  t.after(() => cellns.stop());
  const answer = await cellns.mint();
  assert.equal(answer.cell, CELL.a);
  const verifier = await Verifier.fromJwksUrl(cellns.jwksUrl, expect(CELL.a));
  const claims = await verifier.verify(answer.token);
  assert.deepEqual([claims.tenant, claims.cell, claims.map_version], [TENANT, CELL.a, "sdk-1"]);
  assert.equal(readClaims(answer.token).cell, CELL.a);
  const b = await Verifier.fromJwksUrl(cellns.jwksUrl, expect(CELL.b));
  await assert.rejects(b.verify(answer.token), (e) => e.code === "wrong_cell" && e.expected === CELL.b && e.got === CELL.a);

  // Rotation to an ES256 key: the verifier meets an unknown kid and refetches.
  cellns.keygen("ES256");
  let token;
  await waitUntil("cellns to sign with the new ES256 key", 20_000, async () => {
    token = (await cellns.mint()).token;
    return JSON.parse(Buffer.from(token.split(".")[0], "base64url")).alg === "ES256";
  });
  const accepted = async (tok) => {
    try {
      return await verifier.verify(tok);
    } catch (e) {
      if (e instanceof VerifyError) {
        assert.fail(`a token minted by cellns was refused: ${e.code}: ${e.message} (ES256: the issuer must emit low-S signatures, see sdk/vectors/README.md)`);
      }
      throw e;
    }
  };
  const fetches = verifier.fetches;
  assert.equal((await accepted(token)).tenant, TENANT);
  assert.equal(verifier.fetches, fetches + 1);
  // Every ES256 signature is in the low-S form the verifiers require.
  for (let i = 0; i < 8; i++) await accepted((await cellns.mint()).token);
  await verifier.verify(answer.token); // the old key is still published
});

/** A toy cell: node:http with the middleware, for `name` ('a' or 'b') on `port` (0: any). */
async function toyCell(cellns, name, port) {
  const verifier = await Verifier.fromJwksUrl(cellns.jwksUrl, expect(CELL[name]));
  const mw = cellnsMiddleware(verifier, {
    // Where the tenant lives, from cellns's DNS answer for its name.
    tenantHere: async (c) => {
      const a = await queryA(cellns.dns, `${c.tenant}.${ZONE}`);
      return a.length === 1 && a[0] === IP[name];
    },
  });
  const server = createServer((req, res) =>
    mw(req, res, (err) => {
      if (err) {
        res.statusCode = 500;
        return res.end(String(err));
      }
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ cell: CELL[name], tenant: req.cellns.tenant }));
    }),
  );
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, IP[name], resolve);
  });
  return server;
}

async function bothCells(cellns) {
  let last;
  for (let i = 0; i < 20; i++) {
    const a = await toyCell(cellns, "a", 0);
    try {
      return [a, await toyCell(cellns, "b", a.address().port)];
    } catch (e) {
      last = e;
      await new Promise((r) => a.close(r));
    }
  }
  throw new Error(`no port free on both ${IP.a} and ${IP.b}: ${last}`);
}

test("a toy cell sends the wrong-cell signal; a client follows a move within one refresh", async (t) => {
  const cellns = await startCellns();
  t.after(() => cellns.stop());
  const [a, b] = await bothCells(cellns);
  t.after(() => Promise.all([a, b].map((s) => new Promise((r) => (s.close(r), s.closeAllConnections())))));
  const port = a.address().port;

  const token = (await cellns.mint()).token;
  const r = await fetch(`http://${IP.b}:${port}/whoami`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 421);
  const w = await WrongCell.fromResponse(r);
  assert.deepEqual([w.expected, w.got], [CELL.b, CELL.a]);

  const minted = [];
  const client = createCellFetch({
    getToken: async () => {
      minted.push((await cellns.mint()).token);
      return minted.at(-1);
    },
    // The cell's name resolved through cellns (the system resolver cannot
    // be pointed at an ephemeral port).
    baseUrl: async (cell) => {
      const addrs = await queryA(cellns.dns, cell);
      assert.ok(addrs.length > 0, `${cell} does not resolve`);
      return `http://${addrs[0]}:${port}`;
    },
  });
  assert.deepEqual(await (await client("/whoami")).json(), { cell: CELL.a, tenant: TENANT });
  assert.equal(client.fetches, 1);

  await cellns.move("b", 2);
  assert.deepEqual(await (await client("/whoami")).json(), { cell: CELL.b, tenant: TENANT });
  assert.equal(client.fetches, 2, "one refresh after the move");
  assert.equal(readClaims(minted.at(-1)).mapVersion, "sdk-2");
  assert.equal(client.refresher.unproductiveFetches, 0);
  assert.equal((await (await client("/whoami")).json()).cell, CELL.b);
  assert.equal(client.fetches, 2);
});
