/**
 * The refresh rule of docs/sdk.md as a state machine: when to fetch a
 * token, when to wait, which token to send. Time is passed in, in
 * **milliseconds on a monotonic clock** (`performance.now()`), so tests drive
 * it with a fake clock. Lifetimes are the issuer's `exp - iat` measured from
 * receipt, never compared with the device's wall clock.
 */

import { readClaims, type TokenClaims } from "./claims.js";

const M64 = (1n << 64n) - 1n;
const MAX_ATTEMPTS = 2 ** 32 - 1;

/** The seeded random source of the jitter (the same numbers in every cellns SDK). */
export class SplitMix64 {
  private state: bigint;

  constructor(seed: bigint | number) {
    this.state = BigInt(seed) & M64;
  }

  /** The next 64-bit output. */
  next(): bigint {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & M64;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
    return z ^ (z >> 31n);
  }

  /** A double in [0, 1) from the top 53 bits of {@link next}. */
  jitter(): number {
    return Number(this.next() >> 11n) * 2 ** -53;
  }
}

/**
 * Bounded exponential backoff with jitter: after `n` unproductive fetches
 * the next waits `d/2 + floor(jitter * d/2)` ms, `d = min(maxMs, initialMs * 2^(n-1))`.
 */
export class Backoff {
  constructor(
    readonly initialMs = 100,
    readonly maxMs = 5000,
  ) {
    for (const [name, v] of [["initialMs", initialMs], ["maxMs", maxMs]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`Backoff.${name} must be a non-negative integer, not ${v}`);
    }
  }

  /** The wait after `attempt` unproductive fetches (0: none); `jitter` in [0, 1] (clamped). */
  delayMs(attempt: number, jitter: number): number {
    if (attempt <= 0) return 0;
    // 2^64 exceeds any cap; it keeps huge attempt counts finite.
    const d = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(attempt - 1, 64));
    const half = Math.floor(d / 2);
    return half + Math.floor(half * Math.min(Math.max(jitter, 0), 1));
  }
}

/** How long before expiry to refresh: `min(max(L/5, 1 s), 60 s, L/2)`, in ms. */
export function refreshLeadMs(lifetimeS: number): number {
  const life = lifetimeS * 1000;
  return Math.min(Math.max(Math.floor(life / 5), 1000), 60_000, Math.floor(life / 2));
}

/** The token a {@link Refresher} holds. */
export interface CurrentToken {
  /** The token, to send as `Authorization: Bearer ...`. */
  readonly token: string;
  /** Its routing claims: connect to `claims.cell`. */
  readonly claims: TokenClaims;
  /** When it was received (ms, monotonic). */
  readonly receivedMs: number;
  /** When to fetch the next one. */
  readonly refreshAtMs: number;
  /** When it expires (the issuer's `exp - iat` after receipt). */
  readonly expiresAtMs: number;
  /** The fetch attempt it came from. */
  readonly attempt: number;
}

/** What to do next. */
export type Action =
  | { kind: "fetch" }
  | { kind: "sleep"; untilMs: number }
  | { kind: "send"; current: CurrentToken };

/** The refresh rule (see the module docs). */
export class Refresher {
  readonly backoff: Backoff;
  private readonly rng: SplitMix64;
  private cur: CurrentToken | null = null;
  private unproductive = 0;
  private attempt = 0;
  private gate: number | null = null;

  /** `seed`: the jitter's seed (default: random). */
  constructor(backoff: Backoff = new Backoff(), seed?: bigint | number) {
    this.backoff = backoff;
    this.rng = new SplitMix64(seed ?? randomSeed());
  }

  /** What to do at `nowMs`. A `fetch` is counted when returned. */
  next(nowMs: number): Action {
    const c = this.cur;
    const usable = c !== null && nowMs < c.expiresAtMs;
    const due = c === null || nowMs >= c.refreshAtMs;
    if (due) {
      if (this.gate !== null && nowMs < this.gate) {
        if (!usable) return { kind: "sleep", untilMs: this.gate };
      } else {
        this.unproductive = Math.min(this.unproductive + 1, MAX_ATTEMPTS);
        this.attempt += 1;
        this.gate = nowMs + this.backoff.delayMs(this.unproductive, this.rng.jitter());
        return { kind: "fetch" };
      }
    }
    if (c === null) return { kind: "sleep", untilMs: this.gate ?? nowMs }; // unreachable
    return { kind: "send", current: c };
  }

  /** The auth service returned `token`: it replaces the current one. An unreadable token throws ClaimsError (a failed fetch). */
  fetched(nowMs: number, token: string): CurrentToken {
    const claims = readClaims(token);
    const lifetime = claims.exp - claims.iat;
    const life = lifetime * 1000;
    this.cur = {
      token: token.trim(),
      claims,
      receivedMs: nowMs,
      refreshAtMs: nowMs + life - refreshLeadMs(lifetime),
      expiresAtMs: nowMs + life,
      attempt: this.attempt,
    };
    return this.cur;
  }

  /** The fetch failed: the current token, if still valid, stays in use. */
  fetchFailed(_nowMs: number): void {}

  /** A cell served a request made with the current token; when it is the latest fetched, the backoff starts over. */
  served(_nowMs: number): void {
    if (this.cur !== null && this.cur.attempt === this.attempt) {
      this.unproductive = 0;
      this.gate = null;
    }
  }

  /** The cell refused the current token (wrong-cell signal, 401) or could not be reached: it is dropped. */
  refused(_nowMs: number): void {
    this.cur = null;
  }

  /** The token in use, if any. */
  get current(): CurrentToken | null {
    return this.cur;
  }

  /** Fetch attempts since a freshly fetched token was last served. */
  get unproductiveFetches(): number {
    return this.unproductive;
  }
}

function randomSeed(): bigint {
  const b = new BigUint64Array(1);
  crypto.getRandomValues(b);
  return b[0]!;
}
