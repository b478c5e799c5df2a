/**
 * JSON as every cellns SDK reads a token's header and payload: one grammar,
 * that of Rust's serde_json (the strictest of the three parsers), so that
 * the Rust, Python and TypeScript verifiers refuse the same documents.
 */

/** Deepest nesting of arrays and objects (the outer object counts): serde_json's limit. */
export const MAX_JSON_DEPTH = 127;

/**
 * `JSON.parse`, also refusing (SyntaxError) what `JSON.parse` lets through
 * and serde_json does not: an object with a member name twice, at any depth
 * (`JSON.parse` keeps the last copy; parsers disagree on which one wins); an
 * unpaired surrogate escape (`"\ud800"`); a number beyond a double's range
 * (`1e400`, which `JSON.parse` reads as Infinity); arrays and objects nested
 * deeper than {@link MAX_JSON_DEPTH}.
 */
export function parseJson(text: string): unknown {
  const value: unknown = JSON.parse(text);
  const problem = strictnessProblem(text);
  if (problem !== null) throw new SyntaxError(problem);
  return value;
}

const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const NUMBER = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/**
 * What is wrong with `text`, which `JSON.parse` accepted (so only strings
 * need care while scanning), or null. Member names are compared after
 * unescaping (`"a"` and `"\u0061"` are one name).
 */
function strictnessProblem(text: string): string | null {
  // One entry per open container: the names seen for an object, null for an array.
  const open: (Set<string> | null)[] = [];
  let atName = false; // the next string is a member name
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = i + 1;
      while (text.charCodeAt(end) !== 0x22) end += text.charCodeAt(end) === 0x5c /* \ */ ? 2 : 1;
      const raw = text.slice(i + 1, end);
      // Decoded text (UTF-8, fatal) has no lone surrogate: only an escape makes one.
      const escaped = raw.includes("\\");
      const s = escaped ? (JSON.parse(text.slice(i, end + 1)) as string) : raw;
      if (escaped && UNPAIRED_SURROGATE.test(s)) return "a string with an unpaired surrogate escape";
      const names = open[open.length - 1];
      if (atName && names) {
        if (names.has(s)) return `member ${JSON.stringify(s)} appears twice in one object`;
        names.add(s);
        atName = false;
      }
      i = end;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      open.push(c === 0x7b ? new Set() : null);
      atName = c === 0x7b;
      if (open.length > MAX_JSON_DEPTH) return `arrays and objects nested deeper than ${MAX_JSON_DEPTH}`;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      open.pop();
    } else if (c === 0x2c /* , */) {
      atName = open[open.length - 1] != null;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39) /* 0-9 */) {
      NUMBER.lastIndex = i;
      const token = NUMBER.exec(text)?.[0] ?? text[i]!;
      if (!Number.isFinite(Number(token))) return `number ${token.slice(0, 24)} is beyond a double's range`;
      i += token.length - 1;
    }
  }
  return null;
}
