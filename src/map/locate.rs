//! Finds the line of a field in a map file, so that validation errors can say
//! `file:line: field: message`. Only used when there is something to report:
//! the normal load path never pays for it.

use std::collections::{HashMap, HashSet};

use super::Format;

/// Largest TOML text parsed as a whole document to find lines: `toml_edit`
/// costs tens of bytes of memory per byte of text. Larger files (a big
/// tenant list) are scanned line by line for the fields wanted.
const TOML_DOCUMENT_MAX: usize = 4 << 20;

/// Line lookup for dotted field paths (`cells.use1-a.failover`, `tenants.acme`).
pub(crate) struct Locator<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Toml(Option<toml_edit::Document<&'a str>>),
    /// Byte offset of each wanted key (and of the keys above it), by its
    /// path (segments joined with '\0').
    Offsets(HashMap<String, usize>),
}

impl<'a> Locator<'a> {
    /// Indexes `text` for the field paths in `wanted` (lines of other paths
    /// may be unknown); a file that does not parse yields a locator that
    /// knows no lines (errors then carry the field without a line). Memory
    /// stays proportional to the lines of `text` and the paths wanted.
    pub(crate) fn new(text: &'a str, format: Format, wanted: &[Vec<&str>]) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let prefixes: HashSet<String> = wanted
            .iter()
            .flat_map(|p| (1..=p.len()).map(move |n| p[..n].join("\0")))
            .collect();
        let kind = match format {
            Format::Toml if text.len() <= TOML_DOCUMENT_MAX => {
                Kind::Toml(toml_edit::Document::parse(text).ok())
            }
            Format::Toml => Kind::Offsets(toml_key_offsets(text, &prefixes)),
            Format::Json => Kind::Offsets(json_key_offsets(text, &prefixes)),
        };
        Self {
            text,
            line_starts,
            kind,
        }
    }

    /// 1-based line of the deepest segment of `path` that exists.
    pub(crate) fn line(&self, path: &[&str]) -> Option<usize> {
        let offset = match &self.kind {
            Kind::Toml(doc) => toml_offset(doc.as_ref()?, path),
            Kind::Offsets(keys) => (1..=path.len())
                .rev()
                .find_map(|n| keys.get(&path[..n].join("\0")).copied()),
        }?;
        debug_assert!(offset <= self.text.len());
        Some(self.line_starts.partition_point(|&s| s <= offset))
    }
}

fn toml_offset(doc: &toml_edit::Document<&str>, path: &[&str]) -> Option<usize> {
    let mut item = doc.as_item();
    let mut best = None;
    for seg in path {
        let (key, next) = match item {
            toml_edit::Item::Table(t) => match t.get_key_value(seg) {
                Some(kv) => kv,
                None => return best,
            },
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
                match t.get_key_value(seg) {
                    Some(kv) => kv,
                    None => return best,
                }
            }
            toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                let i: usize = seg.parse().ok()?;
                let v = a.get(i)?;
                best = v.span().map(|s| s.start).or(best);
                return best;
            }
            _ => return best,
        };
        best = key.span().map(|s| s.start).or(best);
        item = next;
    }
    best
}

/// A line scanner for large TOML files: records where each wanted key
/// (a `[table]` header or a `key = ` line, dotted and quoted keys
/// included) starts. It does not validate (the parser already did) and
/// skips the inside of multi-line strings.
fn toml_key_offsets(text: &str, wanted: &HashSet<String>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut table: Vec<String> = Vec::new();
    let mut in_multiline: Option<&str> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let t = line.trim();
        if let Some(q) = in_multiline {
            if t.matches(q).count() % 2 == 1 {
                in_multiline = None;
            }
            continue;
        }
        for q in ["\"\"\"", "'''"] {
            if t.matches(q).count() % 2 == 1 {
                in_multiline = Some(q);
            }
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            let Some(end) = h.find(']') else { continue };
            table = key_segments(&h[..end]);
            let path = table.join("\0");
            if wanted.contains(&path) {
                out.entry(path).or_insert(start + indent);
            }
            continue;
        }
        let Some(eq) = t.find('=') else { continue };
        let mut path = table.clone();
        path.extend(key_segments(&t[..eq]));
        for n in table.len() + 1..=path.len() {
            let p = path[..n].join("\0");
            if wanted.contains(&p) {
                out.entry(p).or_insert(start + indent);
            }
        }
    }
    out
}

/// The segments of a TOML key (`a."b.c".d` → `a`, `b.c`, `d`).
fn key_segments(key: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in key.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '.') => segs.push(std::mem::take(&mut cur).trim().to_owned()),
            (None, c) => cur.push(c),
        }
    }
    segs.push(cur.trim().to_owned());
    segs
}

/// A small JSON scanner that records where each wanted object key starts.
/// It does not validate (serde_json already did); it only tracks nesting:
/// a string followed by `:` is a key, `{`/`[` open a level named by the
/// pending key.
fn json_key_offsets(text: &str, wanted: &HashSet<String>) -> HashMap<String, usize> {
    let b = text.as_bytes();
    let mut out = HashMap::new();
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut pending_key: Option<String> = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => stack.push(pending_key.take()),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => pending_key = None,
            b'"' => {
                let start = i;
                let mut raw = Vec::new();
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    if let Some(&c) = b.get(i) {
                        raw.push(c);
                    }
                    i += 1;
                }
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if b.get(j) == Some(&b':') {
                    let key = String::from_utf8_lossy(&raw).into_owned();
                    let mut path: Vec<&str> = stack.iter().flatten().map(String::as_str).collect();
                    path.push(&key);
                    let path = path.join("\0");
                    if wanted.contains(&path) {
                        out.insert(path, start);
                    }
                    pending_key = Some(key);
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_lines() {
        let t = "[zone]\norigin = \"x.\"\n\n[cells.a]\nhostname = \"h.\"\nfailover = \"b\"\n";
        let wanted = [
            vec!["zone", "origin"],
            vec!["cells", "a", "failover"],
            vec!["cells", "a", "nothing"],
        ];
        let l = Locator::new(t, Format::Toml, &wanted);
        assert_eq!(l.line(&["zone", "origin"]), Some(2));
        assert_eq!(l.line(&["cells", "a", "failover"]), Some(6));
        assert_eq!(l.line(&["cells", "a", "nothing"]), Some(4));
        // The line scanner of large files finds the same lines.
        let offsets = toml_key_offsets(
            t,
            &wanted
                .iter()
                .flat_map(|p| (1..=p.len()).map(move |n| p[..n].join("\0")))
                .collect(),
        );
        let l = Locator {
            text: t,
            line_starts: l.line_starts.clone(),
            kind: Kind::Offsets(offsets),
        };
        assert_eq!(l.line(&["zone", "origin"]), Some(2));
        assert_eq!(l.line(&["cells", "a", "failover"]), Some(6));
        assert_eq!(l.line(&["cells", "a", "nothing"]), Some(4));
        assert_eq!(
            key_segments(" a.\"b.c\" . 'd' "),
            vec!["a".to_owned(), "b.c".to_owned(), "d".to_owned()]
        );
    }

    #[test]
    fn json_lines() {
        let t = "{\n \"zone\": {\"origin\": \"x.\"},\n \"cells\": {\n  \"a\": {\n   \"failover\": \"b\"}},\n \"tenants\": {\"t\": \"a\"}}";
        let l = Locator::new(
            t,
            Format::Json,
            &[
                vec!["zone", "origin"],
                vec!["cells", "a", "failover"],
                vec!["tenants", "t"],
                vec!["cells", "a", "nothing"],
            ],
        );
        assert_eq!(l.line(&["zone", "origin"]), Some(2));
        assert_eq!(l.line(&["cells", "a", "failover"]), Some(5));
        assert_eq!(l.line(&["tenants", "t"]), Some(6));
        assert_eq!(l.line(&["cells", "a", "nothing"]), Some(4));
    }
}
