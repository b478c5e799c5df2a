/**
 * Reading a token's routing claims **without verifying it** (clients).
 *
 * SDKs hold no keys: the cell verifies the token. The claims are still
 * outsider-controlled input, so they are checked before use: `cell` must be
 * a hostname (it ends up in a URL), `tenant` one DNS label, `exp` after `iat`
 * by at most 30 days.
 */

import { decodeJson, utf8Length } from "./b64.js";

/** Largest token accepted, in bytes. */
export const MAX_TOKEN_BYTES = 16384;
/** Largest `iat`/`nbf`/`exp` accepted: 2^53 - 1 (`Number.MAX_SAFE_INTEGER`). */
export const MAX_NUMERIC_DATE = Number.MAX_SAFE_INTEGER;
/**
 * Longest lifetime (`exp - iat`, seconds) a client accepts: 30 days. A
 * client keeps times as "received + lifetime"; a token claiming to live for
 * centuries is nonsense (cells accept a day by default).
 */
export const MAX_TOKEN_LIFETIME = 30 * 86400;

/** Why a token's claims could not be read. */
export type ClaimsErrorKind = "not_jwt" | "payload" | "invalid";

/** A token whose claims a client cannot use. */
export class ClaimsError extends Error {
  /** `not_jwt` (too long, not three parts), `payload` (not base64url JSON, a member name twice, a claim missing or mistyped), `invalid` (a value a client must not use, a lifetime over 30 days). */
  readonly kind: ClaimsErrorKind;
  constructor(kind: ClaimsErrorKind, message: string) {
    super(message);
    this.name = "ClaimsError";
    this.kind = kind;
  }
}

/** The claims a client routes by, read from a token it has not verified. */
export interface TokenClaims {
  /** The tenant id (one DNS label, lowercase). */
  tenant: string;
  /** The hostname of the tenant's cell, lowercase, no trailing dot: where to connect. */
  cell: string;
  /** Issued at, Unix seconds (the issuer's clock). */
  iat: number;
  /** Expiry, Unix seconds (the issuer's clock). */
  exp: number;
  /** The map version the cell was taken from (for logs). */
  mapVersion: string;
}

/** A JSON integer in [0, 2^53 - 1]. */
export function isNumericDate(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

const LABEL = /^[A-Za-z0-9_-]{1,63}$/;

/** One DNS label of ASCII letters, digits, `-`, `_`. */
export function isLabel(s: string): boolean {
  return LABEL.test(s);
}

/** A hostname of such labels, at most 253 bytes, no trailing dot. */
export function isHostname(name: string): boolean {
  return name.length > 0 && name.length <= 253 && name.split(".").every(isLabel);
}

/**
 * The one canonical form of a hostname, as in every cellns SDK: ASCII
 * letters lowercased and ONE trailing dot removed (`a.example..` becomes
 * `a.example.`, which is not a hostname, rather than `a.example`).
 */
export function canonicalHost(name: string): string {
  return asciiLower(name.endsWith(".") ? name.slice(0, -1) : name);
}

/** Lowercases A-Z only (DNS compares ASCII case-insensitively). */
export function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

/**
 * Reads the routing claims of `token` without verifying it: `cell` a
 * hostname (canonical form), `tenant` one DNS label, `exp` after `iat` by
 * at most {@link MAX_TOKEN_LIFETIME}. Throws {@link ClaimsError}.
 */
export function readClaims(token: string): TokenClaims {
  if (utf8Length(token, MAX_TOKEN_BYTES) > MAX_TOKEN_BYTES) {
    throw new ClaimsError("not_jwt", `not a JWT: longer than ${MAX_TOKEN_BYTES} bytes`);
  }
  const parts = token.trim().split(".");
  if (parts.length !== 3) throw new ClaimsError("not_jwt", "not a JWT: not three parts separated by dots");
  let payload: unknown;
  try {
    payload = decodeJson(parts[1]!, true);
  } catch (e) {
    throw new ClaimsError("payload", `token payload: not base64url JSON (${(e as Error).message})`);
  }
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) {
    throw new ClaimsError("payload", "token payload: not a JSON object");
  }
  const p = payload as Record<string, unknown>;
  for (const name of ["tenant", "cell", "map_version"]) {
    if (typeof p[name] !== "string") throw new ClaimsError("payload", `token payload: claim ${name} missing or not a string`);
  }
  for (const name of ["iat", "exp"]) {
    if (!isNumericDate(p[name])) {
      throw new ClaimsError("payload", `token payload: claim ${name} missing or not an integer in [0, 2^53-1]`);
    }
  }
  const cell = canonicalHost(p.cell as string);
  if (!isHostname(cell)) {
    throw new ClaimsError("invalid", `claim cell ${JSON.stringify(p.cell)}: not a hostname (ASCII letters, digits, '-', '_' and dots, at most 253 bytes)`);
  }
  const tenant = asciiLower(p.tenant as string);
  if (!isLabel(tenant)) throw new ClaimsError("invalid", `claim tenant ${JSON.stringify(p.tenant)}: not one DNS label`);
  const iat = p.iat as number;
  const exp = p.exp as number;
  if (exp <= iat) throw new ClaimsError("invalid", "claim exp: not after iat, the token has no lifetime");
  if (exp - iat > MAX_TOKEN_LIFETIME) {
    throw new ClaimsError("invalid", `token lifetime (exp - iat) of ${exp - iat} s is longer than the ${MAX_TOKEN_LIFETIME} s a client accepts`);
  }
  return { tenant, cell, iat, exp, mapVersion: p.map_version as string };
}
