/**
 * A `fetch` wrapper that sends requests to the tenant's cell and follows
 * the tenant when it moves: it gets tokens from the caller's `getToken`,
 * sends each request to the cell the token's `cell` claim names, and on the
 * wrong-cell signal, a 401 or an unreachable cell drops the token, gets a
 * new one (respecting the backoff) and retries against the cell the new
 * token names.
 */

import { Backoff, Refresher, type CurrentToken } from "./refresh.js";
import { readBounded, WRONG_CELL_STATUS, WrongCell, MAX_SIGNAL_BODY } from "./signal.js";

/** Options of {@link createCellFetch}. */
export interface CellFetchOptions {
  /** A token from your auth service (which got it from cellns). */
  getToken: () => string | Promise<string>;
  /** The URL prefix of a cell (e.g. after resolving it yourself); default `https://<cell>`. */
  baseUrl?: (cell: string) => string | Promise<string>;
  /** Default 100 ms doubling to 5 s. */
  backoff?: Backoff;
  /** The jitter's seed (default random). */
  seed?: bigint | number;
  /** Token fetches one request may make before it gives up (default 4). */
  maxFetches?: number;
  /** The `fetch` to use (default the global one). */
  fetch?: typeof fetch;
  /** Monotonic milliseconds (default `performance.now()`). */
  now?: () => number;
  /** Waits `ms` (default a timer). */
  sleep?: (ms: number) => Promise<void>;
}

/** A request gave up: every token fetched for it was refused, or none could be fetched. `cause` is the last failure. */
export class NoCellAccepts extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NoCellAccepts";
  }
}

/** The wrapper: `fetch(path, init)` against the tenant's current cell. */
export interface CellFetch {
  (path: string, init?: RequestInit): Promise<Response>;
  /** The state machine (its current token, counters). */
  readonly refresher: Refresher;
  /** Tokens fetched so far. */
  readonly fetches: number;
}

/**
 * A fetch that follows the tenant's cell (see the module docs). Requests are
 * retried on another cell after a refusal or when a cell cannot be reached,
 * so make non-idempotent requests idempotent if a retry could repeat them.
 * Concurrent requests share one token fetch. A request body must be
 * re-sendable (a string, bytes, FormData, URLSearchParams: not a stream).
 */
export function createCellFetch(options: CellFetchOptions): CellFetch {
  const refresher = new Refresher(options.backoff ?? new Backoff(), options.seed);
  const baseUrl = options.baseUrl ?? ((cell: string) => `https://${cell}`);
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const now = options.now ?? (() => performance.now());
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const maxFetches = options.maxFetches ?? 4;
  let fetches = 0;
  let inflight: Promise<void> | null = null;

  /** A token to send, fetching (once for all concurrent callers) when needed. */
  async function token(state: { fetched: number; last: unknown }, what: string): Promise<CurrentToken> {
    for (;;) {
      if (inflight !== null) {
        await inflight;
        continue;
      }
      const t = now();
      const action = refresher.next(t);
      if (action.kind === "send") return action.current;
      if (state.fetched >= maxFetches) {
        throw new NoCellAccepts(`${what}: no cell accepted the ${state.fetched} token(s) fetched for this request`, {
          cause: state.last,
        });
      }
      if (action.kind === "sleep") {
        await sleep(Math.max(0, action.untilMs - t));
        continue;
      }
      state.fetched += 1;
      fetches += 1;
      inflight = (async () => {
        try {
          const tok = await options.getToken();
          refresher.fetched(now(), tok);
        } catch (e) {
          refresher.fetchFailed(now());
          state.last = e;
        } finally {
          inflight = null;
        }
      })();
      await inflight;
    }
  }

  const cellFetch = async (path: string, init: RequestInit = {}): Promise<Response> => {
    const state = { fetched: 0, last: undefined as unknown };
    const what = `${init.method ?? "GET"} ${path}`;
    let plain421Retried = false;
    for (;;) {
      const current = await token(state, what);
      const headers = new Headers(init.headers);
      headers.set("authorization", `Bearer ${current.token}`);
      let resp: Response;
      try {
        const url = (await baseUrl(current.claims.cell)).replace(/\/+$/, "") + path;
        resp = await doFetch(url, { ...init, headers });
      } catch (e) {
        if (init.signal?.aborted) throw e;
        // Unreachable (or unresolvable): it may be down, and a new token may
        // name its failover.
        drop(current);
        state.last = e;
        continue;
      }
      if (resp.status === WRONG_CELL_STATUS || resp.status === 401) {
        const body = await readBounded(resp, MAX_SIGNAL_BODY);
        const signal = body === null ? null : WrongCell.fromHttp(resp.status, body);
        if (signal !== null || resp.status === 401) {
          drop(current);
          state.last = new Error(`${current.claims.cell} refused the token: ${signal ? signal.message : "HTTP 401"}`);
          continue;
        }
        if (!plain421Retried) {
          // A bare 421 is plain HTTP: retry once, keep the token.
          plain421Retried = true;
          continue;
        }
        return new Response(body, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
      }
      if (resp.status < 500 && refresher.current?.token === current.token) refresher.served(now());
      return resp;
    }
  };

  /** Drops `current` unless a concurrent request already replaced it. */
  function drop(current: CurrentToken): void {
    if (refresher.current?.token === current.token) refresher.refused(now());
  }

  Object.defineProperty(cellFetch, "refresher", { value: refresher });
  Object.defineProperty(cellFetch, "fetches", { get: () => fetches });
  return cellFetch as CellFetch;
}
