//! The map parser: bytes as a map file, TOML or JSON (the first byte
//! picks), through parsing, validation and compilation (`map::load_str`).
//! A map that loads is also prepared for DNS (`Answers::prepare`), as a
//! reload does. Errors are fine; a panic, a hang or runaway memory is not.

#![no_main]

use cellns::map::{Format, Source, load_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: cellns_fuzz::seeds_requested("map_parse"),
    |data: &[u8]| {
    let Some((&mode, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let format = if mode & 1 == 0 { Format::Toml } else { Format::Json };
    if let Ok(snap) = load_str(Source {
        text,
        format,
        name: "fuzz",
    }) {
        let store = cellns::dns::prepared::store_of(snap);
        let live = store.load();
        assert!(!live.view.map().cells.is_empty(), "a loaded map has cells");
    }
});
