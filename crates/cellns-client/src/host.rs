//! Hostnames: the one canonical form, and what counts as a hostname.

/// The canonical form of a hostname, the only one cellns compares or puts
/// in a token: ASCII letters lowercased (nothing else changes), and one
/// trailing dot removed (`USE1-A.Cells.Example.` → `use1-a.cells.example`).
///
/// The issuer writes the `cell` claim in this form; the [`crate::Verifier`]
/// compares a token's `cell` with its own in this form; the client reads
/// the claim and names DNS answers in this form. SDKs in other languages
/// must do exactly this (no Unicode case folding, only one dot removed).
pub fn canonical_host(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A relative DNS hostname of plain labels: 1 to 253 bytes, labels of 1 to
/// 63 letters, digits, `-` or `_`.
pub(crate) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_host_lowercases_ascii_and_drops_one_trailing_dot() {
        assert_eq!(
            canonical_host("USE1-A.Cells.Example.COM."),
            "use1-a.cells.example.com"
        );
        assert_eq!(canonical_host("a.example"), "a.example");
        // Only one dot: "a.." is not a hostname and must not become one.
        assert_eq!(canonical_host("a.."), "a.");
        assert_eq!(canonical_host("."), "");
        // No Unicode case folding (other languages' lower() may do more).
        assert_eq!(canonical_host("É.example"), "É.example");
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("a.example"));
        assert!(is_hostname("_x-1.b"));
        for bad in ["", "a..b", "a.", "a/b", "user@host", &"a".repeat(64)] {
            assert!(!is_hostname(bad), "{bad:?}");
        }
    }
}
