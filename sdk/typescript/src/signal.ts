/**
 * The wrong-cell signal: "this cell does not serve this tenant; get a new
 * token and connect to the cell it names". HTTP: status 421 with
 * `{"error": {"code": "wrong_cell", ...}}`; gRPC: status FAILED_PRECONDITION
 * (9) with the trailer `cellns-wrong-cell` (docs/sdk.md). Clients act on the
 * status and the code (or trailer) together: a bare 421 is plain HTTP.
 */

import { canonicalHost } from "./claims.js";

/** HTTP status of the signal: 421 Misdirected Request. */
export const WRONG_CELL_STATUS = 421;
/** `error.code` of the signal. */
export const WRONG_CELL_CODE = "wrong_cell";
/** gRPC status code of the signal: FAILED_PRECONDITION. */
export const GRPC_WRONG_CELL_STATUS = 9;
/** gRPC trailing metadata key whose presence (with status 9) is the signal. */
export const GRPC_WRONG_CELL_TRAILER = "cellns-wrong-cell";
/** Largest body examined for the signal (a cell's is under 1 KiB). */
export const MAX_SIGNAL_BODY = 64 * 1024;

/** Trailers as gRPC libraries give them: pairs, a Map, a plain object, or `@grpc/grpc-js` Metadata (`getMap()`). */
export type Trailers =
  | Iterable<readonly [string, unknown]>
  | Map<string, unknown>
  | Record<string, unknown>
  | { getMap(): Record<string, unknown> }
  | null
  | undefined;

/** The human-readable text of the signal. */
export function wrongCellMessage(expected: string, got: string): string {
  return expected === got
    ? `the tenant is no longer served by ${expected}: get a new token`
    : `this is ${expected}, the token is for ${got}: get a new token`;
}

/** The wrong-cell signal. */
export class WrongCell {
  /**
   * @param expected the hostname of the cell that refused
   * @param got the refused token's `cell` claim (= `expected` when the tenant moved away)
   * @param message for people and logs
   */
  constructor(
    readonly expected: string,
    readonly got: string,
    readonly message: string,
  ) {}

  /** The signal of cell `expected` refusing a token for cell `got` (both in canonical form: lowercase, one trailing dot removed). */
  static create(expected: string, got: string): WrongCell {
    const e = canonicalHost(expected);
    const g = canonicalHost(got);
    return new WrongCell(e, g, wrongCellMessage(e, g));
  }

  /** The JSON body of the HTTP form (status 421, `Content-Type: application/json`). */
  httpBody(): string {
    return JSON.stringify({
      error: { code: WRONG_CELL_CODE, message: this.message, expected: this.expected, got: this.got },
    });
  }

  /** Headers of the HTTP form. */
  httpHeaders(): Record<string, string> {
    return { "content-type": "application/json", "cache-control": "no-store" };
  }

  /** Trailing metadata of the gRPC form (status 9, details {@link message}). */
  grpcTrailers(): [string, string][] {
    return [[GRPC_WRONG_CELL_TRAILER, this.expected]];
  }

  /** The signal in an HTTP response, if it is one: status 421 and a JSON body with `error.code === "wrong_cell"`. */
  static fromHttp(status: number, body: string | Uint8Array | null | undefined): WrongCell | null {
    if (status !== WRONG_CELL_STATUS || body == null || body.length > MAX_SIGNAL_BODY) return null;
    let doc: unknown;
    try {
      doc = JSON.parse(typeof body === "string" ? body : new TextDecoder("utf-8", { fatal: true }).decode(body));
    } catch {
      return null;
    }
    const err = isObject(doc) ? doc.error : undefined;
    if (!isObject(err) || err.code !== WRONG_CELL_CODE) return null;
    const text = (v: unknown) => (typeof v === "string" ? v : "");
    return new WrongCell(text(err.expected), text(err.got), text(err.message));
  }

  /**
   * The signal in a fetch `Response`, if it is one. Reads at most
   * {@link MAX_SIGNAL_BODY} bytes of the body, and only of a 421, from a clone
   * (the response stays readable).
   */
  static async fromResponse(resp: Response): Promise<WrongCell | null> {
    if (resp.status !== WRONG_CELL_STATUS) return null;
    const body = await readBounded(resp.clone(), MAX_SIGNAL_BODY);
    return body === null ? null : WrongCell.fromHttp(resp.status, body);
  }

  /**
   * The signal in a gRPC status, if it is one: code 9 and the
   * `cellns-wrong-cell` trailer (key compared case-insensitively). The
   * refused token's cell is not in the trailer: `got` is `""`.
   */
  static fromGrpc(code: number, trailers: Trailers, details = ""): WrongCell | null {
    if (code !== GRPC_WRONG_CELL_STATUS || trailers == null) return null;
    for (const [key, value] of entries(trailers)) {
      if (key.toLowerCase() !== GRPC_WRONG_CELL_TRAILER) continue;
      const v = Array.isArray(value) ? value[0] : value;
      const text = v instanceof Uint8Array ? new TextDecoder().decode(v) : String(v ?? "");
      return new WrongCell(text, "", details);
    }
    return null;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function entries(t: NonNullable<Trailers>): Iterable<readonly [string, unknown]> {
  if (t instanceof Map) return t.entries();
  if (typeof (t as { getMap?: unknown }).getMap === "function") {
    return Object.entries((t as { getMap(): Record<string, unknown> }).getMap());
  }
  if (typeof (t as Iterable<unknown>)[Symbol.iterator] === "function") return t as Iterable<readonly [string, unknown]>;
  return Object.entries(t as Record<string, unknown>);
}

/** The body of `resp` if it has at most `limit` bytes, else `null` (reading stops at the limit). */
export async function readBounded(resp: Response, limit: number): Promise<Uint8Array<ArrayBuffer> | null> {
  const length = resp.headers.get("content-length");
  if (length !== null && /^\d+$/.test(length) && Number(length) > limit) {
    await resp.body?.cancel().catch(() => {});
    return null;
  }
  if (resp.body === null) return new Uint8Array(0);
  const reader = resp.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
