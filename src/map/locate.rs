//! Finds the line of a field in a map file, so that validation errors can say
//! `file:line: field: message`. Only used when there is something to report:
//! the normal load path never pays for it.

use std::collections::HashMap;

use super::Format;

/// Line lookup for dotted field paths (`cells.use1-a.failover`, `tenants.acme`).
pub(crate) struct Locator<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Toml(Option<toml_edit::Document<&'a str>>),
    /// Byte offset of every key, by its path (segments joined with '\0').
    Json(HashMap<String, usize>),
}

impl<'a> Locator<'a> {
    /// Indexes `text`; a file that does not parse yields a locator that
    /// knows no lines (errors then carry the field without a line).
    pub(crate) fn new(text: &'a str, format: Format) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let kind = match format {
            Format::Toml => Kind::Toml(toml_edit::Document::parse(text).ok()),
            Format::Json => Kind::Json(json_key_offsets(text)),
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
            Kind::Json(keys) => (1..=path.len())
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

/// A small JSON scanner that records where each object key starts. It does
/// not validate (serde_json already did); it only tracks nesting: a string
/// followed by `:` is a key, `{`/`[` open a level named by the pending key.
fn json_key_offsets(text: &str) -> HashMap<String, usize> {
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
                    out.insert(path.join("\0"), start);
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
        let l = Locator::new(t, Format::Toml);
        assert_eq!(l.line(&["zone", "origin"]), Some(2));
        assert_eq!(l.line(&["cells", "a", "failover"]), Some(6));
        assert_eq!(l.line(&["cells", "a", "nothing"]), Some(4));
    }

    #[test]
    fn json_lines() {
        let t = "{\n \"zone\": {\"origin\": \"x.\"},\n \"cells\": {\n  \"a\": {\n   \"failover\": \"b\"}},\n \"tenants\": {\"t\": \"a\"}}";
        let l = Locator::new(t, Format::Json);
        assert_eq!(l.line(&["zone", "origin"]), Some(2));
        assert_eq!(l.line(&["cells", "a", "failover"]), Some(5));
        assert_eq!(l.line(&["tenants", "t"]), Some(6));
        assert_eq!(l.line(&["cells", "a", "nothing"]), Some(4));
    }
}
