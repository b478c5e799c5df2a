/**
 * Resolving a tenant's or a cell's hostname with the system resolver
 * (Node only: `node:dns`). cellns is authoritative for the delegated tenant
 * zone, so the ordinary resolver finds the `cell` claim of a token and the
 * tenant's own name `<tenant>.<zone>`; {@link sameEndpoint} checks that both
 * lead to the same place.
 */

import { lookup } from "node:dns/promises";
import { isIP } from "node:net";

import { canonicalHost, isHostname, isLabel } from "./claims.js";

/** The addresses a name resolved to. */
export interface Lookup {
  /** The name asked for (lowercase, no trailing dot). */
  canonical: string;
  /** IPv4 then IPv6 addresses, no duplicates. */
  addrs: string[];
}

/** The tenant's own DNS name, `<tenant>.<zone>`; throws for a tenant that is not one DNS label. */
export function tenantHostname(tenant: string, zone: string): string {
  const t = canonicalHost(tenant);
  const z = canonicalHost(zone);
  if (!isLabel(t)) throw new RangeError(`tenant ${JSON.stringify(tenant)} is not one DNS label`);
  if (!isHostname(z)) throw new RangeError(`zone ${JSON.stringify(zone)} is not a hostname`);
  const name = `${t}.${z}`;
  if (name.length > 253) throw new RangeError(`${name} is longer than 253 bytes`);
  return name;
}

/** Resolves a cell or tenant hostname with the system resolver. */
export async function resolve(host: string): Promise<Lookup> {
  const name = canonicalHost(host);
  if (!isHostname(name)) throw new RangeError(`${JSON.stringify(host)} is not a hostname`);
  const all = await lookup(name, { all: true, verbatim: true });
  const v4 = [...new Set(all.filter((a) => isIP(a.address) === 4).map((a) => a.address))];
  const v6 = [...new Set(all.filter((a) => isIP(a.address) === 6).map((a) => a.address))];
  return { canonical: name, addrs: [...v4, ...v6] };
}

/** Same canonical name, or the same non-empty set of addresses. */
export function sameEndpoint(a: Lookup, b: Lookup): boolean {
  if (a.canonical === b.canonical) return true;
  const sa = new Set(a.addrs);
  const sb = new Set(b.addrs);
  return sa.size > 0 && sa.size === sb.size && [...sa].every((x) => sb.has(x));
}
