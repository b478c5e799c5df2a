//! Map diffs: what a change moves (see `cellns diff`).
