/**
 * Verifying tokens as a cell does, with `jose` for the signatures.
 *
 * A cell builds one {@link Verifier} for its own hostname from the JWKS URL
 * of cellns. The key set is fetched at start, cached as long as the
 * answer's `Cache-Control: max-age` says (300 s without one), refetched
 * when a token names an unknown `kid` (at most once per `refetchIntervalMs`),
 * and kept when a refresh fails. Every failure has its own code, the same
 * in the Rust, Python and TypeScript verifiers (sdk/vectors/README.md).
 *
 * Only EdDSA (Ed25519) and ES256 are accepted, decided from the header
 * before any key is used. ES256 signatures must be in low-S form: jose and
 * WebCrypto accept the high-S twin of a valid signature.
 */

import { compactVerify, importJWK, type JWK } from "jose";

import { decode, decodeJson, utf8Length } from "./b64.js";
import { canonicalHost, isNumericDate, MAX_TOKEN_BYTES } from "./claims.js";
import { readBounded } from "./signal.js";

/** Clock skew tolerated on `exp`, `nbf` and `iat`, seconds. */
export const DEFAULT_LEEWAY = 30;
/** Largest leeway a verifier accepts. */
export const MAX_LEEWAY = 300;
/** Longest `exp - iat` accepted by default, seconds. */
export const DEFAULT_MAX_LIFETIME = 86400;
/** Shortest interval between JWKS fetches caused by unknown `kid`s, ms. */
export const REFETCH_INTERVAL_MS = 10_000;
/** How long a JWKS answer without `max-age` is used, ms. */
export const DEFAULT_MAX_AGE_MS = 300_000;
/** Longest a JWKS answer is used, whatever its `max-age`, ms. */
export const MAX_MAX_AGE_MS = 86_400_000;
/** Largest JWKS document accepted, bytes. */
export const MAX_JWKS_BYTES = 1 << 20;

/** Every verifier error code. */
export const CODES = [
  "too_large",
  "malformed",
  "alg_none",
  "disallowed_algorithm",
  "unknown_kid",
  "bad_signature",
  "non_canonical_signature",
  "expired",
  "not_yet_valid",
  "issued_in_future",
  "lifetime_too_long",
  "wrong_issuer",
  "wrong_audience",
  "wrong_cell",
  "jwks_unavailable",
] as const;
export type VerifyErrorCode = (typeof CODES)[number];

/** Why a token was refused; for `wrong_cell`, `expected` is this cell and `got` the token's. */
export class VerifyError extends Error {
  constructor(
    readonly code: VerifyErrorCode,
    message: string,
    readonly expected = "",
    readonly got = "",
  ) {
    super(message);
    this.name = "VerifyError";
  }
}

/** The verified claims of a cellns token (the whole payload). */
export interface Claims {
  iss: string;
  aud: string;
  sub: string;
  iat: number;
  nbf: number;
  exp: number;
  jti: string;
  tenant: string;
  cell: string;
  cell_id: string;
  region: string;
  map_version: string;
  ext?: Record<string, unknown> | null;
  [other: string]: unknown;
}

/** What a cell expects of a token. */
export interface ExpectationsInit {
  issuer: string;
  audience: string;
  /** This cell's hostname (compared in canonical form: ASCII case-insensitively, one trailing dot ignored). */
  cell: string;
  /** Seconds, 0 to 300 (default 30). */
  leeway?: number;
  /** Longest `exp - iat`, seconds (default 86400). */
  maxLifetime?: number;
}

/** Checked expectations. */
export class Expectations {
  readonly issuer: string;
  readonly audience: string;
  readonly cell: string;
  readonly leeway: number;
  readonly maxLifetime: number;

  constructor(init: ExpectationsInit) {
    const leeway = init.leeway ?? DEFAULT_LEEWAY;
    const maxLifetime = init.maxLifetime ?? DEFAULT_MAX_LIFETIME;
    if (!Number.isInteger(leeway) || leeway < 0 || leeway > MAX_LEEWAY) {
      throw new RangeError(`leeway must be an integer in [0, ${MAX_LEEWAY}] seconds, not ${leeway}`);
    }
    if (!Number.isInteger(maxLifetime) || maxLifetime <= 0) {
      throw new RangeError(`maxLifetime must be a positive integer (seconds), not ${maxLifetime}`);
    }
    if (canonicalHost(init.cell) === "") throw new RangeError("cell must be this cell's hostname");
    this.issuer = init.issuer;
    this.audience = init.audience;
    this.cell = init.cell;
    this.leeway = leeway;
    this.maxLifetime = maxLifetime;
  }
}

type Alg = "EdDSA" | "ES256";
const CURVES: Record<string, Alg> = { "OKP Ed25519": "EdDSA", "EC P-256": "ES256" };
const STRING_CLAIMS = ["iss", "aud", "sub", "jti", "tenant", "cell", "cell_id", "region", "map_version"];
const DATE_CLAIMS = ["iat", "nbf", "exp"];
const P256_HALF_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n / 2n;
const P256_P = 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n;
const ED_P = 2n ** 255n - 19n;
const ED_D = mod(-121665n * modPow(121666n, ED_P - 2n, ED_P), ED_P);

interface Key {
  alg: Alg;
  key: Awaited<ReturnType<typeof importJWK>>;
}

interface Screened {
  alg: Alg;
  kid: string;
  claims: Claims;
  sig: Uint8Array;
}

/** Public keys by `kid`, from a JWKS document (RFC 7517). */
export class KeySet {
  private constructor(private readonly keys: Map<string, Key>) {}

  /**
   * Parses a JWKS document, entry by entry (sdk/vectors/README.md).
   *
   * Entries cellns does not use (other types or curves, no `kid`, `use`
   * other than `sig`, an `alg` not the curve's) are skipped. So is a
   * usable-looking key with bad material (`x`/`y` not strict base64url of
   * 32 bytes, not a point of the curve, an Ed25519 key of small order),
   * told to `warn`: one broken key must not take the others down. A `kid`
   * on more than one entry is ambiguous: every entry with it is dropped,
   * told to `warn`. Only a document that is not a JSON object with a `keys`
   * array (or larger than 1 MiB) is an error (`jwks_unavailable`).
   */
  static async fromJwks(document: string | Uint8Array | object, warn: (message: string) => void = consoleWarn): Promise<KeySet> {
    const bad = (m: string) => new VerifyError("jwks_unavailable", `JWKS: ${m}`);
    let doc: unknown = document;
    if (typeof document === "string" || document instanceof Uint8Array) {
      if (document.length > MAX_JWKS_BYTES) throw bad(`document larger than ${MAX_JWKS_BYTES} bytes`);
      try {
        doc = JSON.parse(typeof document === "string" ? document : new TextDecoder("utf-8", { fatal: true }).decode(document));
      } catch (e) {
        throw bad(`not JSON (${(e as Error).message})`);
      }
    }
    const list = isObject(doc) ? doc.keys : undefined;
    if (!Array.isArray(list)) throw bad('not an object with a "keys" array');
    const entries = list.filter(isObject);
    const copies = new Map<string, number>();
    for (const k of entries) if (typeof k.kid === "string") copies.set(k.kid, (copies.get(k.kid) ?? 0) + 1);
    for (const [kid, n] of copies) {
      if (n > 1) warn(`JWKS: key id ${JSON.stringify(kid)} published ${n} times; ambiguous, every copy dropped`);
    }
    const keys = new Map<string, Key>();
    for (const k of entries) {
      if (typeof k.kid !== "string" || typeof k.kty !== "string" || typeof k.crv !== "string") continue;
      const alg = Object.hasOwn(CURVES, `${k.kty} ${k.crv}`) ? CURVES[`${k.kty} ${k.crv}`] : undefined;
      // `use` and `alg` may be absent (or null); anything else but "sig" and
      // the curve's algorithm (another string, another type) skips the key.
      if (alg === undefined || (k.use != null && k.use !== "sig") || (k.alg != null && k.alg !== alg)) continue;
      if (copies.get(k.kid)! > 1) continue;
      const key = await publicKey(alg, k.x, k.y);
      if (key === null) {
        const want = alg === "EdDSA" ? "x strict base64url of 32 bytes encoding a point not of small order" : "x and y strict base64url of 32 bytes, a point of the curve";
        warn(`JWKS: key ${JSON.stringify(k.kid)} skipped, not a valid ${k.crv} public key (${want})`);
        continue;
      }
      keys.set(k.kid, { alg, key });
    }
    return new KeySet(keys);
  }

  /** `{kid: alg}` of the keys. */
  get kids(): Record<string, Alg> {
    return Object.fromEntries([...this.keys].map(([kid, k]) => [kid, k.alg]));
  }

  /** Whether a key has this `kid`. */
  has(kid: string): boolean {
    return this.keys.has(kid);
  }

  /** Verifies `token`; the claims when valid, else rejects with {@link VerifyError}. `now`: Unix seconds. */
  async verify(token: string, expect: Expectations, now = Math.floor(Date.now() / 1000)): Promise<Claims> {
    return check(this, screen(token), token, expect, now);
  }

  /** @internal */
  key(kid: string): Key | undefined {
    return this.keys.get(kid);
  }
}

const consoleWarn = (message: string) => console.warn(`cellns-client: ${message}`);

/** A JWK coordinate: strict base64url of exactly 32 bytes, else null. */
function coordinate(v: unknown): Uint8Array | null {
  if (typeof v !== "string") return null;
  try {
    const raw = decode(v);
    return raw.length === 32 ? raw : null;
  } catch {
    return null;
  }
}

/** The key of a usable-looking JWK's material, or null when it is bad. */
async function publicKey(alg: Alg, x: unknown, y: unknown): Promise<Key["key"] | null> {
  const xb = coordinate(x);
  if (xb === null) return null;
  let jwk: JWK;
  if (alg === "EdDSA") {
    if (!ed25519PointOk(xb)) return null;
    jwk = { kty: "OKP", crv: "Ed25519", x: x as string };
  } else {
    const yb = coordinate(y);
    // Checked here rather than left to the crypto backend, as in every SDK.
    if (yb === null || bigEndian(xb) >= P256_P || bigEndian(yb) >= P256_P) return null;
    jwk = { kty: "EC", crv: "P-256", x: x as string, y: y as string };
  }
  try {
    return await importJWK(jwk, alg); // refuses a P-256 point off the curve
  } catch {
    return null;
  }
}

function bigEndian(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function mod(a: bigint, m: bigint): bigint {
  const r = a % m;
  return r < 0n ? r + m : r;
}

function modPow(base: bigint, exp: bigint, m: bigint): bigint {
  let result = 1n;
  let b = mod(base, m);
  for (let e = exp; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % m;
    b = (b * b) % m;
  }
  return result;
}

/**
 * RFC 8032 §5.1.3 decoding succeeds (y below p, x^2 has a root, no -0) and
 * the point is not of small order (8P is not the identity): the checks the
 * Rust verifier makes; WebCrypto and OpenSSL load any 32 bytes.
 */
function ed25519PointOk(raw: Uint8Array): boolean {
  const p = ED_P;
  const n = bigEndian(raw.slice().reverse());
  let y = n & (2n ** 255n - 1n);
  const sign = n >> 255n;
  if (y >= p) return false;
  const u = mod(y * y - 1n, p);
  const v = mod(ED_D * y * y + 1n, p);
  let x = mod(u * modPow(v, 3n, p) * modPow(u * modPow(v, 7n, p), (p - 5n) / 8n, p), p);
  if (mod(v * x * x, p) === mod(-u, p)) x = mod(x * modPow(2n, (p - 1n) / 4n, p), p);
  if (mod(v * x * x, p) !== u || (x === 0n && sign === 1n)) return false;
  for (let i = 0; i < 3; i++) {
    // 8P by doubling (the addition law is complete).
    const t = mod(ED_D * x * x * y * y, p);
    [x, y] = [mod(2n * x * y * modPow(1n + t, p - 2n, p), p), mod((y * y + x * x) * modPow(mod(1n - t, p), p - 2n, p), p)];
  }
  return !(x === 0n && y === 1n);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Everything that needs no key: size, structure, header, claim types. */
function screen(token: string): Screened {
  if (utf8Length(token, MAX_TOKEN_BYTES) > MAX_TOKEN_BYTES) {
    throw new VerifyError("too_large", `token longer than ${MAX_TOKEN_BYTES} bytes`);
  }
  const malformed = (m: string) => new VerifyError("malformed", `malformed token: ${m}`);
  const parts = token.split(".");
  if (parts.length !== 3) throw malformed("not three base64url parts separated by dots");
  const [h, p, s] = parts as [string, string, string];
  let sig: Uint8Array;
  let header: unknown;
  try {
    sig = decode(s);
    decode(p);
  } catch (e) {
    throw malformed((e as Error).message);
  }
  try {
    header = decodeJson(h);
  } catch {
    throw malformed("header is not base64url UTF-8 JSON");
  }
  if (!isObject(header)) throw malformed("header is not a JSON object");
  const alg = header.alg;
  if (typeof alg !== "string") throw malformed("header has no alg");
  if (alg.toLowerCase() === "none") throw new VerifyError("alg_none", "unsigned token (alg none) refused");
  if (alg !== "EdDSA" && alg !== "ES256") {
    throw new VerifyError("disallowed_algorithm", `algorithm ${JSON.stringify(alg)} is not allowed (EdDSA, ES256)`);
  }
  // RFC 7515 §4.1.11: critical extensions we do not understand must be refused.
  if ("crit" in header) throw malformed("header has critical extensions (crit), none are supported");
  if (typeof header.kid !== "string") throw malformed("header has no kid");
  let payload: unknown;
  try {
    payload = decodeJson(p);
  } catch {
    throw malformed("payload is not UTF-8 JSON");
  }
  if (!isObject(payload)) throw malformed("payload is not a JSON object");
  for (const name of STRING_CLAIMS) {
    if (typeof payload[name] !== "string") throw malformed(`claim ${name} missing or not a string`);
  }
  for (const name of DATE_CLAIMS) {
    if (!isNumericDate(payload[name])) throw malformed(`claim ${name} missing or not an integer in [0, 2^53-1]`);
  }
  if (canonicalHost(payload.cell as string) === "") throw malformed("claim cell is empty");
  if (payload.ext != null && !isObject(payload.ext)) throw malformed("claim ext is not an object");
  return { alg, kid: header.kid, claims: payload as Claims, sig };
}

async function check(keys: KeySet, s: Screened, token: string, expect: Expectations, now: number): Promise<Claims> {
  const key = keys.key(s.kid);
  if (key === undefined) throw new VerifyError("unknown_kid", `unknown key id ${JSON.stringify(s.kid)}`);
  if (key.alg !== s.alg) {
    throw new VerifyError("disallowed_algorithm", `algorithm ${s.alg} is not allowed: key ${JSON.stringify(s.kid)} is a ${key.alg} key`);
  }
  const bad = () => new VerifyError("bad_signature", "bad signature: the token was tampered with or signed by another key");
  if (s.sig.length !== 64) throw bad();
  try {
    await compactVerify(token, key.key, { algorithms: [s.alg] });
  } catch {
    throw bad();
  }
  if (s.alg === "ES256") {
    let sv = 0n;
    for (const b of s.sig.subarray(32)) sv = (sv << 8n) | BigInt(b);
    if (sv > P256_HALF_N) throw new VerifyError("non_canonical_signature", "ES256 signature not in low-S form");
  }
  const c = s.claims;
  const l = expect.leeway;
  if (now > c.exp + l) throw new VerifyError("expired", `token expired at ${c.exp} (now ${now}, leeway ${l} s)`);
  if (c.nbf > now + l) throw new VerifyError("not_yet_valid", `token not valid before ${c.nbf} (now ${now}, leeway ${l} s)`);
  if (c.iat > now + l) throw new VerifyError("issued_in_future", `token issued at ${c.iat}, in the future (now ${now}, leeway ${l} s)`);
  if (c.exp - c.iat > expect.maxLifetime) {
    throw new VerifyError("lifetime_too_long", `token lives ${c.exp - c.iat} s, more than ${expect.maxLifetime} s`);
  }
  if (c.iss !== expect.issuer) throw new VerifyError("wrong_issuer", `wrong issuer (expected ${JSON.stringify(expect.issuer)})`);
  if (c.aud !== expect.audience) throw new VerifyError("wrong_audience", `wrong audience (expected ${JSON.stringify(expect.audience)})`);
  const here = canonicalHost(expect.cell);
  const there = canonicalHost(c.cell);
  if (here !== there) {
    throw new VerifyError("wrong_cell", `token is for cell ${JSON.stringify(there)}, this is ${JSON.stringify(here)}: refresh the token`, here, there);
  }
  return c;
}

/**
 * How long to use a JWKS answer, ms: its `max-age` (`no-store`/`no-cache`
 * mean 0), at least `floorMs` and at most {@link MAX_MAX_AGE_MS}; `defaultMs`
 * without either.
 */
export function cacheMs(cacheControl: string | null, defaultMs: number, floorMs: number): number {
  if (cacheControl) {
    if (/(?:^|,)\s*(?:no-store|no-cache)\s*(?:[,=]|$)/i.test(cacheControl)) return floorMs;
    const m = /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?\s*(?:,|$)/i.exec(cacheControl);
    if (m) return Math.min(Math.max(Number(m[1]) * 1000, floorMs), MAX_MAX_AGE_MS);
  }
  return Math.min(Math.max(defaultMs, floorMs), MAX_MAX_AGE_MS);
}

/** Options of a remote {@link Verifier}. */
export interface VerifierOptions {
  /** Shortest interval between unknown-kid refetches (default 10 s). */
  refetchIntervalMs?: number;
  /** Cache time without `max-age` (default 300 s). */
  defaultMaxAgeMs?: number;
  /** Largest JWKS document (default 1 MiB). */
  maxJwksBytes?: number;
  /** Timeout of one fetch (default 5 s). */
  timeoutMs?: number;
  /** Don't fetch at construction; fail with `jwks_unavailable` until a fetch succeeds. */
  lazy?: boolean;
  /** The `fetch` to use (default the global one). */
  fetch?: typeof fetch;
  /** Monotonic ms (default `performance.now()`). */
  clock?: () => number;
  /** Unix seconds (default `Date.now() / 1000`). */
  wallClock?: () => number;
  /** Told about failed refreshes (the cached keys stay in use). Default `console.warn`. */
  onRefreshError?: (error: Error) => void;
  /** Told about JWKS entries dropped (bad key material, a duplicated `kid`). Default `console.warn`. */
  onKeyDropped?: (message: string) => void;
}

/** Verifies tokens for one cell, with the keys of a JWKS URL or a fixed {@link KeySet}. */
export class Verifier {
  readonly expect: Expectations;
  readonly url: string | null;
  private keys: KeySet | null;
  private staleAt = -Infinity;
  private kidRefetchAt: number | null = null;
  private refreshing: Promise<void> | null = null;
  private readonly o: Required<Omit<VerifierOptions, "lazy">>;
  /** Fetches attempted. */
  fetches = 0;
  /** The last failure (`null` after a success): for readiness checks and logs. */
  lastError: string | null = null;

  private constructor(source: string | KeySet, expect: Expectations | ExpectationsInit, options: VerifierOptions) {
    this.expect = expect instanceof Expectations ? expect : new Expectations(expect);
    this.url = typeof source === "string" ? source : null;
    this.keys = typeof source === "string" ? null : source;
    if (this.url === null) this.staleAt = Infinity;
    this.o = {
      refetchIntervalMs: options.refetchIntervalMs ?? REFETCH_INTERVAL_MS,
      defaultMaxAgeMs: options.defaultMaxAgeMs ?? DEFAULT_MAX_AGE_MS,
      maxJwksBytes: options.maxJwksBytes ?? MAX_JWKS_BYTES,
      timeoutMs: options.timeoutMs ?? 5000,
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      clock: options.clock ?? (() => performance.now()),
      wallClock: options.wallClock ?? (() => Date.now() / 1000),
      onRefreshError: options.onRefreshError ?? ((e) => console.warn(`cellns-client: ${e.message}`)),
      onKeyDropped: options.onKeyDropped ?? consoleWarn,
    };
  }

  /** A verifier over a fixed key set. */
  static fromKeySet(keys: KeySet, expect: Expectations | ExpectationsInit, options: VerifierOptions = {}): Verifier {
    return new Verifier(keys, expect, options);
  }

  /** A verifier for the keys at `url`: fetched now (rejecting with `jwks_unavailable` if that fails) unless `lazy`. */
  static async fromJwksUrl(url: string, expect: Expectations | ExpectationsInit, options: VerifierOptions = {}): Promise<Verifier> {
    const v = new Verifier(url, expect, options);
    if (!options.lazy) {
      await v.refresh(true);
      if (v.keys === null) throw new VerifyError("jwks_unavailable", `JWKS ${url}: ${v.lastError}`);
    }
    return v;
  }

  /** `{kid: alg}` of the cached keys. */
  get kids(): Record<string, string> {
    return this.keys?.kids ?? {};
  }

  /** The claims when `token` is valid for this cell, else rejects with {@link VerifyError}. */
  async verify(token: string, now?: number): Promise<Claims> {
    const s = screen(token);
    if (this.url !== null) {
      let refreshed = false;
      if (this.o.clock() >= this.staleAt) {
        await this.refresh(false);
        refreshed = true;
      }
      // An unknown kid refetches, unless the set was just fetched.
      if (!refreshed && !this.keys?.has(s.kid)) {
        const t = this.o.clock();
        if (this.kidRefetchAt === null || t - this.kidRefetchAt >= this.o.refetchIntervalMs) {
          this.kidRefetchAt = t;
          await this.refresh(true);
        }
      }
    }
    if (this.keys === null) throw new VerifyError("jwks_unavailable", `JWKS ${this.url}: ${this.lastError}`);
    return check(this.keys, s, token, this.expect, now ?? Math.floor(this.o.wallClock()));
  }

  /** One fetch at a time; concurrent callers wait for it. */
  private async refresh(force: boolean): Promise<void> {
    if (this.refreshing !== null) return this.refreshing;
    if (!force && this.o.clock() < this.staleAt) return;
    this.refreshing = this.doRefresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    const url = this.url!;
    this.fetches += 1;
    try {
      const resp = await this.o.fetch(url, {
        headers: { accept: "application/json" },
        signal: AbortSignal.timeout(this.o.timeoutMs),
      });
      if (!resp.ok) {
        await resp.body?.cancel().catch(() => {});
        throw new Error(`HTTP ${resp.status}`);
      }
      const body = await readBounded(resp, this.o.maxJwksBytes);
      if (body === null) throw new Error(`document larger than ${this.o.maxJwksBytes} bytes`);
      this.keys = await KeySet.fromJwks(body, this.o.onKeyDropped);
      this.lastError = null;
      this.staleAt = this.o.clock() + cacheMs(resp.headers.get("cache-control"), this.o.defaultMaxAgeMs, this.o.refetchIntervalMs);
    } catch (e) {
      this.lastError = (e as Error).message || String(e);
      // Retry after the refetch interval, not on every token.
      this.staleAt = this.o.clock() + this.o.refetchIntervalMs;
      this.o.onRefreshError(new Error(`JWKS ${url}: refresh failed, keeping the cached keys: ${this.lastError}`));
    }
  }
}
