/**
 * Middleware for a cell, in the `(req, res, next)` shape of Express and
 * Connect (and usable with plain `node:http`): verifies the bearer token of
 * every request, answers the wrong-cell signal (421) for a token of another
 * cell or a tenant that moved away, 401 for a missing or invalid token and
 * 503 when the issuer's keys cannot be fetched. The verified claims go to
 * `req.cellns`.
 *
 * ```js
 * import express from "express";
 * import { Verifier } from "cellns-client/verify";
 * import { cellnsMiddleware } from "cellns-client/express";
 *
 * const verifier = await Verifier.fromJwksUrl("https://cellns.internal/.well-known/jwks.json",
 *   { issuer: "cellns", audience: "cells", cell: "use1-a.cells.example.com" });
 * express().use(cellnsMiddleware(verifier)).get("/v1/whoami", (req, res) => res.json(req.cellns));
 * ```
 */

import { WrongCell } from "./signal.js";
import { VerifyError, type Claims, type Verifier } from "./verify.js";

/** The parts of a request the middleware reads (Express, Connect, node:http). */
export interface CellRequest {
  headers: Record<string, string | string[] | undefined>;
  url?: string;
  path?: string;
  cellns?: Claims;
}

/** The parts of a response the middleware writes (node:http's ServerResponse). */
export interface CellResponse {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
}

/** Options of {@link cellnsMiddleware}. */
export interface CellnsMiddlewareOptions {
  /** Does the tenant (still) live in this cell? `false` sends the wrong-cell signal. */
  tenantHere?: (claims: Claims) => boolean | Promise<boolean>;
  /** Paths that pass without a token (e.g. health checks). */
  exempt?: Iterable<string>;
}

/** The bearer token of an `Authorization` header value. */
export function bearerToken(authorization: string | string[] | undefined): string | null {
  const value = Array.isArray(authorization) ? authorization[0] : authorization;
  if (!value) return null;
  const m = /^\s*bearer\s+(\S+)\s*$/i.exec(value);
  return m ? m[1]! : null;
}

function send(res: CellResponse, status: number, headers: Record<string, string>, body: string): void {
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader("content-length", String(new TextEncoder().encode(body).length));
  res.end(body);
}

function error(res: CellResponse, status: number, code: string, message: string, extra: Record<string, string>): void {
  send(res, status, { "content-type": "application/json", "cache-control": "no-store", ...extra }, JSON.stringify({ error: { code, message } }));
}

/** Sends the wrong-cell signal: this cell (`expected`) refuses a token for `got`. */
export function sendWrongCell(res: CellResponse, expected: string, got: string): void {
  const w = WrongCell.create(expected, got);
  send(res, 421, w.httpHeaders(), w.httpBody());
}

/** The answer to a token the verifier refused. */
export function sendRefusal(res: CellResponse, err: VerifyError): void {
  if (err.code === "wrong_cell") return sendWrongCell(res, err.expected, err.got);
  if (err.code === "jwks_unavailable") {
    return error(res, 503, err.code, "the cell cannot fetch the issuer's keys; retry later", { "retry-after": "5" });
  }
  error(res, 401, err.code, err.message, {
    "www-authenticate": `Bearer realm="cell", error="invalid_token", error_description="${err.code}"`,
  });
}

/** The middleware (see the module docs). */
export function cellnsMiddleware(
  verifier: Verifier,
  options: CellnsMiddlewareOptions = {},
): (req: CellRequest, res: CellResponse, next: (err?: unknown) => void) => void {
  const exempt = new Set(options.exempt ?? []);
  return (req, res, next) => {
    const path = req.path ?? (req.url ?? "/").split("?")[0]!;
    if (exempt.has(path)) return next();
    const token = bearerToken(req.headers.authorization);
    if (token === null) {
      return error(res, 401, "unauthenticated", "send the token as Authorization: Bearer <token>", {
        "www-authenticate": 'Bearer realm="cell"',
      });
    }
    verifier.verify(token).then(
      async (claims) => {
        if (options.tenantHere !== undefined && !(await options.tenantHere(claims))) {
          return sendWrongCell(res, verifier.expect.cell, verifier.expect.cell);
        }
        req.cellns = claims;
        next();
      },
      (err: unknown) => {
        if (err instanceof VerifyError) sendRefusal(res, err);
        else next(err);
      },
    ).catch(next);
  };
}
