/** JSON as every cellns SDK reads a token's header and payload. */

/**
 * `JSON.parse`, refusing (SyntaxError) an object with a member name twice,
 * at any depth. `JSON.parse` keeps the last copy, Rust's serde refuses some
 * and ignores others: parsers disagree on which copy wins, so every cellns
 * SDK refuses such a document (sdk/vectors/README.md).
 */
export function parseJson(text: string): unknown {
  const value: unknown = JSON.parse(text);
  const twice = duplicateMember(text);
  if (twice !== null) throw new SyntaxError(`member ${JSON.stringify(twice)} appears twice in one object`);
  return value;
}

/**
 * The first member name given twice in one object of `text`, which
 * `JSON.parse` accepted (so only strings need care while scanning), or null.
 * Names are compared after unescaping (`"a"` and `"\u0061"` are one name).
 */
function duplicateMember(text: string): string | null {
  // One entry per open container: the names seen for an object, null for an array.
  const open: (Set<string> | null)[] = [];
  let atName = false; // the next string is a member name
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = i + 1;
      while (text.charCodeAt(end) !== 0x22) end += text.charCodeAt(end) === 0x5c /* \ */ ? 2 : 1;
      const names = open[open.length - 1];
      if (atName && names) {
        const raw = text.slice(i + 1, end);
        const name = raw.includes("\\") ? (JSON.parse(text.slice(i, end + 1)) as string) : raw;
        if (names.has(name)) return name;
        names.add(name);
        atName = false;
      }
      i = end;
    } else if (c === 0x7b /* { */) {
      open.push(new Set());
      atName = true;
    } else if (c === 0x5b /* [ */) {
      open.push(null);
      atName = false;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      open.pop();
    } else if (c === 0x2c /* , */) {
      atName = open[open.length - 1] != null;
    }
  }
  return null;
}
