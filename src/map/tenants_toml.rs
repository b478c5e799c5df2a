//! A fast reader for the `[tenants]` table of a TOML map.
//!
//! A general TOML parser builds a document tree first: for a million
//! `tenant = "cell"` lines that costs hundreds of megabytes and most of the
//! load time. This reader handles the plain form those lines take — bare
//! or quoted keys, plain string values, comments — straight into a
//! [`TenantList`]; the rest of the file still goes through the `toml`
//! crate. Anything it does not recognise (escapes, dotted keys, inline
//! tables, multi-line strings, a second `[tenants]`) makes it step aside, and
//! the whole file is parsed by `toml` as before, so results never differ.

use std::collections::HashMap;

use super::schema::{TenantEntry, TenantList};

/// The file split around its `[tenants]` table, when it has exactly one
/// and the table's lines are all of the plain form.
pub(crate) struct Split {
    /// The file without its tenants table.
    pub rest: String,
    /// The tenants read from the table.
    pub tenants: TenantList,
}

fn is_header(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with('[')
}

fn is_tenants_header(line: &str) -> bool {
    let t = line.trim();
    let Some(inner) = t.strip_prefix('[') else {
        return false;
    };
    let Some(end) = inner.find(']') else {
        return false;
    };
    if inner.starts_with('[') {
        return false;
    }
    let after = inner[end + 1..].trim_start();
    inner[..end].trim() == "tenants" && (after.is_empty() || after.starts_with('#'))
}

/// Splits `text`, or `None` when the fast reader does not apply.
pub(crate) fn split(text: &str) -> Option<Split> {
    let mut start = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if is_tenants_header(line) {
            if start.is_some() {
                return None;
            }
            start = Some(pos);
        }
        pos += line.len();
    }
    let start = start?;
    // A `[tenants]` line inside a multi-line string would fool the split.
    let before = &text[..start];
    if before.matches("\"\"\"").count() % 2 == 1 || before.matches("'''").count() % 2 == 1 {
        return None;
    }
    let mut lines = text[start..].split_inclusive('\n');
    let header = lines.next()?;
    let mut end = start + header.len();
    let mut tenants = TenantList::default();
    let mut interned: HashMap<&str, u32> = HashMap::new();
    for line in lines {
        if is_header(line) {
            break;
        }
        end += line.len();
        let Some((key, value)) = entry(line)? else {
            continue;
        };
        let offset = u32::try_from(tenants.arena.len()).ok()?;
        tenants.arena.push_str(key);
        let cell_ref = match interned.get(value) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(tenants.cell_refs.len()).ok()?;
                tenants.cell_refs.push(value.to_owned());
                interned.insert(value, i);
                i
            }
        };
        tenants.entries.push(TenantEntry {
            offset,
            len: key.len() as u32,
            cell_ref,
        });
    }
    // No padding in place of the table: when the rest does not parse, the
    // caller parses the whole file again, and validation finds lines in the
    // original text.
    let rest = format!("{}{}", &text[..start], &text[end..]);
    Some(Split { rest, tenants })
}

/// One line of the table: `Some(None)` for blank/comment lines,
/// `Some(Some((key, value)))` for an entry, `None` for anything else.
fn entry(line: &str) -> Option<Option<(&str, &str)>> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Some(None);
    }
    let (key, rest) = string_or_bare(t, true)?;
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let (value, rest) = string_or_bare(rest, false)?;
    let rest = rest.trim_start();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return None;
    }
    Some(Some((key, value)))
}

/// A bare key (when allowed) or a one-line string without escapes.
fn string_or_bare(s: &str, bare_ok: bool) -> Option<(&str, &str)> {
    let plain = |c: char| c != '\\' && (c == '\t' || !c.is_control());
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q) {
            if inner.starts_with(q) {
                return None; // empty string or multi-line: leave it to toml
            }
            let end = inner.find(q)?;
            let v = &inner[..end];
            if !v.chars().all(plain) {
                return None;
            }
            return Some((v, &inner[end + 1..]));
        }
    }
    if !bare_ok {
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &TenantList) -> Vec<(String, String)> {
        t.iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    #[test]
    fn reads_plain_tables_and_keeps_lines() {
        let text = "[zone]\norigin = \"x.\"\n\n[tenants]\n# c\nacme = \"a\"  # note\n\"glo-bex\" = 'b'\n\n[placement]\nunknown = \"hash\"\n";
        let s = split(text).expect("plain");
        assert_eq!(
            names(&s.tenants),
            vec![("acme".into(), "a".into()), ("glo-bex".into(), "b".into())]
        );
        assert!(s.rest.contains("[placement]\nunknown"));
        assert!(!s.rest.contains("acme"));
    }

    #[test]
    fn steps_aside_for_anything_unusual() {
        for body in [
            "a.b = \"x\"",
            "a = \"x\\\"y\"",
            "a = { c = 1 }",
            "a = \"\"\"x\"\"\"",
            "a = 1",
            "a = \"x\" b",
            "= \"x\"",
        ] {
            let text = format!("[tenants]\n{body}\n");
            assert!(split(&text).is_none(), "{body}");
        }
        assert!(split("[zone]\n").is_none());
        assert!(split("[tenants]\n[tenants]\n").is_none());
        assert!(split("x = \"\"\"\n[tenants]\n\"\"\"\n").is_none());
    }

    #[test]
    fn same_result_as_toml() {
        let text = crate::map::EXAMPLE_MAP;
        let fast = split(text).expect("example map is plain");
        let full: crate::map::MapFile = toml::from_str(text).unwrap();
        assert_eq!(names(&fast.tenants), names(&full.tenants));
        let rest: crate::map::MapFile = toml::from_str(&fast.rest).unwrap();
        assert!(rest.tenants.is_empty());
    }
}
