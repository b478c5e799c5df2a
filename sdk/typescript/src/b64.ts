/** Strict base64url (RFC 4648 §5), as JWS uses it; no Node-only APIs. */

import { parseJson } from "./json.js";

const ALPHABET = /^[A-Za-z0-9_-]*$/;

/** base64url without padding. */
export function encode(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * Decodes unpadded base64url, refusing other characters, padding, an
 * impossible length and non-zero unused trailing bits (so one byte string
 * has exactly one encoding).
 */
export function decode(text: string): Uint8Array {
  if (!ALPHABET.test(text) || text.length % 4 === 1) {
    throw new Error("not unpadded base64url");
  }
  const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (encode(out) !== text) throw new Error("base64url with non-zero trailing bits");
  return out;
}

/** As {@link decode}, also accepting the canonical `=` padding. */
export function decodePaddingOptional(text: string): Uint8Array {
  const stripped = text.replace(/=+$/, "");
  if (stripped !== text && text.length - stripped.length !== (4 - (stripped.length % 4)) % 4) {
    throw new Error("base64url with wrong padding");
  }
  return decode(stripped);
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * The JSON value of a base64url part (throws if it is not UTF-8 JSON, or
 * an object in it has a member name twice).
 */
export function decodeJson(part: string, paddingOptional = false): unknown {
  const bytes = paddingOptional ? decodePaddingOptional(part) : decode(part);
  return parseJson(utf8.decode(bytes));
}

/** UTF-8 length of a string, without encoding it when it is obviously too long. */
export function utf8Length(s: string, limit: number): number {
  if (s.length > limit) return s.length; // every UTF-16 unit is at least one byte
  return new TextEncoder().encode(s).length;
}
