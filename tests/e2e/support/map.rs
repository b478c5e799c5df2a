//! The one map builder: maps are built as data ([`Map`]) and written as
//! TOML or JSON (the two formats of the same schema), into a directory laid
//! out as a plain file or as a Kubernetes ConfigMap volume ([`MapDir`]),
//! and replaced the ways a control plane does ([`Mode`]). Also the test
//! maps several test files share, and the generated maps of `cellns
//! gen-map` (tenants `t000001`…, cells `c0001`…).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use cellns::map::Format;
pub use cellns::map::generate::{Spec, generate_spec, tenant_name};

use super::{example_map, write_synced};

/// A map file's content, built field by field.
#[derive(Debug, Clone)]
pub struct Map(toml::Table);

impl Map {
    /// A map of zone `origin` with one nameserver `ns1.<origin>` (glue
    /// 192.0.2.1), no cells and no tenants.
    pub fn new(origin: &str, version: &str) -> Self {
        let ns = format!("ns1.{origin}");
        Self(toml::Table::new())
            .set("version", version)
            .set("zone.origin", origin)
            .set("zone.nameservers", vec![ns.clone()])
            .set("zone.hostmaster", format!("hostmaster.{origin}"))
            .glue(&ns, &["192.0.2.1"])
    }

    /// Sets the glue addresses of in-zone nameserver `ns`.
    pub fn glue(mut self, ns: &str, addrs: &[&str]) -> Self {
        let addrs = addrs.iter().map(|a| (*a).into()).collect();
        self.table("zone.glue")
            .insert(ns.into(), toml::Value::Array(addrs));
        self
    }

    /// zones/example.toml.
    pub fn example() -> Self {
        let text = std::fs::read_to_string(example_map()).expect("read the example map");
        Self(toml::from_str(&text).expect("the example map is TOML"))
    }

    /// The table at dotted `path` (created when missing).
    fn table(&mut self, path: &str) -> &mut toml::Table {
        let mut t = &mut self.0;
        for key in path.split('.') {
            t = t
                .entry(key)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{key} of {path} is not a table"));
        }
        t
    }

    /// Sets the field at dotted `path` (`zone.ttl`, `safety.max_moved_fraction`).
    pub fn set(mut self, path: &str, value: impl Into<toml::Value>) -> Self {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let t = if parent.is_empty() {
            &mut self.0
        } else {
            self.table(parent)
        };
        t.insert(key.into(), value.into());
        self
    }

    /// Allows any share of the tenants to move in one reload (tests that
    /// move one tenant of a small map on purpose).
    pub fn no_gate(self) -> Self {
        self.set("safety.max_moved_fraction", 1.0)
    }

    /// Adds (or replaces) cell `id`.
    pub fn cell(mut self, id: &str, cell: Cell) -> Self {
        self.table("cells")
            .insert(id.into(), toml::Value::Table(cell.0));
        self
    }

    /// Places `tenant` on `cell`.
    pub fn tenant(mut self, tenant: &str, cell: &str) -> Self {
        self.table("tenants").insert(tenant.into(), cell.into());
        self
    }

    /// The map as TOML.
    pub fn toml(&self) -> String {
        toml::to_string(&self.0).expect("a map serialises as TOML")
    }

    /// The map as JSON (pretty-printed: one field a line).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.0).expect("a map serialises as JSON")
    }
}

/// The 1-based number of the first line containing `needle` at or after
/// the first line containing `after`.
pub fn line_of(text: &str, after: &str, needle: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.contains(after))
        .unwrap_or_else(|| panic!("no `{after}` in:\n{text}"));
    from + 1
        + lines[from..]
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` after `{after}` in:\n{text}"))
}

/// One cell of a [`Map`].
#[derive(Debug, Clone)]
pub struct Cell(toml::Table);

impl Cell {
    /// A cell named `hostname`, no addresses.
    pub fn new(hostname: &str) -> Self {
        Self(toml::Table::from_iter([(
            "hostname".to_owned(),
            hostname.into(),
        )]))
    }

    /// Its IPv4 endpoints.
    pub fn ipv4<S: ToString>(self, addrs: impl IntoIterator<Item = S>) -> Self {
        self.list("ipv4", addrs)
    }

    /// Its IPv6 endpoints.
    pub fn ipv6<S: ToString>(self, addrs: impl IntoIterator<Item = S>) -> Self {
        self.list("ipv6", addrs)
    }

    fn list<S: ToString>(mut self, key: &str, items: impl IntoIterator<Item = S>) -> Self {
        let v = items.into_iter().map(|a| a.to_string().into()).collect();
        self.0.insert(key.into(), toml::Value::Array(v));
        self
    }

    /// Sets another field (`status`, `failover`, `region`, `weight`).
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }
}

/// How the control plane replaces the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Truncate and rewrite the file itself.
    InPlace,
    /// Write a temporary file in the same directory and rename it over.
    Rename,
    /// Kubernetes ConfigMap volume: `map.toml -> ..data/map.toml`,
    /// `..data -> ..<timestamp>`; an update writes a new timestamped
    /// directory and renames a new `..data` symlink over the old one.
    Kubernetes,
}

/// A map file in a temporary directory, as a plain file or in the
/// Kubernetes ConfigMap layout.
#[derive(Debug)]
pub struct MapDir {
    /// Keeps the directory alive (and holds what else a test writes).
    pub dir: tempfile::TempDir,
    /// The path given to `--map`.
    pub path: PathBuf,
    file: String,
    k8s: bool,
    generation: usize,
}

impl MapDir {
    /// `map.toml` holding `text`, as a plain file or (`k8s`) in the
    /// Kubernetes layout.
    pub fn new(text: &str, k8s: bool) -> Self {
        Self::named("map.toml", text, k8s)
    }

    /// A map file called `file` (its extension says the format).
    pub fn named(file: &str, text: &str, k8s: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file);
        let m = Self {
            dir,
            path,
            file: file.to_owned(),
            k8s,
            generation: 0,
        };
        if k8s {
            let data = m.k8s_dir(0);
            std::fs::create_dir(&data).expect("mkdir");
            write_synced(&data.join(file), text);
            symlink(&m.k8s_name(0), &m.dir.path().join("..data"));
            symlink(&Path::new("..data").join(file), &m.path);
        } else {
            write_synced(&m.path, text);
        }
        m
    }

    fn k8s_name(&self, generation: usize) -> PathBuf {
        PathBuf::from(format!(
            "..2026_11_27_10_00_{generation:02}.{generation:09}"
        ))
    }

    fn k8s_dir(&self, generation: usize) -> PathBuf {
        self.dir.path().join(self.k8s_name(generation))
    }

    /// Replaces the map with `text` the way `mode` says (the Kubernetes
    /// layout always uses the symlink swap).
    pub fn write(&mut self, text: &str, mode: Mode) {
        if self.k8s || mode == Mode::Kubernetes {
            assert!(
                self.k8s,
                "this map directory is not in the Kubernetes layout"
            );
            let old = self.k8s_dir(self.generation);
            self.generation += 1;
            let new = self.k8s_dir(self.generation);
            std::fs::create_dir(&new).expect("mkdir");
            write_synced(&new.join(&self.file), text);
            let tmp = self.dir.path().join("..data_tmp");
            symlink(&self.k8s_name(self.generation), &tmp);
            std::fs::rename(&tmp, self.dir.path().join("..data")).expect("swap ..data");
            std::fs::remove_dir_all(&old).expect("remove the old data");
            return;
        }
        match mode {
            Mode::InPlace => std::fs::write(&self.path, text).expect("write in place"),
            Mode::Rename => super::replace_file(&self.path, text),
            Mode::Kubernetes => unreachable!(),
        }
    }

    /// Removes the map file (the symlink, in the Kubernetes layout).
    pub fn remove(&self) {
        std::fs::remove_file(&self.path).expect("remove the map");
    }

    /// `--map PATH` as a string.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
}

// ---------------------------------------------------------------------------
// The small test map (reload, observability and admin tests).

/// The zone of the small test map.
pub const ORIGIN: &str = "cells.example.test.";

/// The A endpoints of small-map cell `c` (`a`, `b`, ...).
pub fn cell_v4(c: char) -> BTreeSet<IpAddr> {
    let n = c as u8 - b'a';
    [format!("10.9.{n}.1"), format!("10.9.{n}.2")]
        .iter()
        .map(|s| s.parse().expect("address"))
        .collect()
}

/// The AAAA endpoint of small-map cell `c`.
pub fn cell_v6(c: char) -> BTreeSet<IpAddr> {
    let n = c as u8 - b'a';
    BTreeSet::from([format!("2001:db8:9:{n}::1").parse().expect("address")])
}

/// Small-map cell `c` (hostname `<c>.<ORIGIN>`, two A and one AAAA).
pub fn small_cell(c: char) -> Cell {
    Cell::new(&format!("{c}.{ORIGIN}"))
        .ipv4(cell_v4(c))
        .ipv6(cell_v6(c))
}

/// The small map: TTL 5, cells `a` and `b`, tenant `acme` on `acme_on`
/// and twenty more (`f00` … `f19`) on `a`. `version` makes otherwise
/// equal maps differ.
pub fn small(version: &str, acme_on: char) -> Map {
    let mut m = Map::new(ORIGIN, version)
        .set("zone.ttl", 5)
        .cell("a", small_cell('a'))
        .cell("b", small_cell('b'))
        .tenant("acme", &acme_on.to_string());
    for i in 0..20 {
        m = m.tenant(&format!("f{i:02}"), "a");
    }
    m
}

// ---------------------------------------------------------------------------
// Generated maps.

/// A generated map: `tenants` over `cells`, every `move_every`th tenant on
/// the next cell (0: none), with `version`. Its zone is [`ORIGIN`].
pub fn generated(tenants: usize, cells: usize, move_every: usize, version: &str) -> Spec {
    let mut s = Spec::new(tenants, cells, Format::Toml);
    s.move_every = move_every;
    s.version = Some(version.to_owned());
    s
}

/// The A endpoints of generated cell `k` (0-based).
pub fn generated_cell_v4(k: usize) -> BTreeSet<IpAddr> {
    let ([a1, a2], _) = cellns::map::generate::cell_addrs(k);
    [a1, a2]
        .iter()
        .map(|a| a.parse().expect("address"))
        .collect()
}

/// The cell (0-based) generated tenant `i` (1-based) is on in `spec`.
pub fn generated_tenant_cell(spec: &Spec, i: usize) -> usize {
    cellns::map::generate::tenant_cell(spec, i)
}

// ---------------------------------------------------------------------------
// The transfer map (zone transfer and secondary tests).

/// The zone of the transfer map (the one deploy/secondaries/ serves).
pub const XFR_ORIGIN: &str = "cells.example.com.";

/// A map whose SOA refresh and retry are an hour, so a secondary that
/// changes within seconds was told by NOTIFY. Cells: `a` (in-zone name,
/// IPv4 and IPv6), `b`, `c` (down, fails over to `b`), `d` (only an
/// out-of-zone name: a CNAME). Tenants: `acme` on `acme_on`, `downco` on
/// `c`, `cnameco` on `d`, and thirty more (`f00`…`f29`, even ones on `a`,
/// odd ones on `b`) so that moving one stays within the reload safety
/// gates.
pub fn xfr(version: &str, acme_on: char) -> Map {
    let o = XFR_ORIGIN;
    let mut m = Map::new(o, version)
        .set("zone.ttl", 30)
        .set("zone.negative_ttl", 30)
        .set("zone.refresh", 3600)
        .set("zone.retry", 3600)
        .set("zone.hostmaster", "hostmaster.example.test.")
        .cell(
            "a",
            Cell::new(&format!("a.{o}"))
                .ipv4(["192.0.2.10", "192.0.2.11"])
                .ipv6(["2001:db8::a"])
                .set("failover", "b"),
        )
        .cell(
            "b",
            Cell::new(&format!("b.{o}"))
                .ipv4(["192.0.2.20"])
                .ipv6(["2001:db8::b"]),
        )
        .cell(
            "c",
            Cell::new(&format!("c.{o}"))
                .ipv4(["192.0.2.30"])
                .set("status", "down")
                .set("failover", "b"),
        )
        .cell("d", Cell::new("d.lb.example.net."))
        .tenant("acme", &acme_on.to_string())
        .tenant("downco", "c")
        .tenant("cnameco", "d");
    for i in 0..30 {
        m = m.tenant(&format!("f{i:02}"), if i % 2 == 0 { "a" } else { "b" });
    }
    m
}

/// The records an AXFR of [`xfr`] carries (with `acme` on `a`): the SOA
/// twice, NS, the nameserver's glue, the cells' in-zone names (a: 2 A +
/// AAAA, b: A + AAAA, c: A; d is out of zone), and the tenants: acme 3,
/// downco (served by b) 2, cnameco 1 CNAME, f00…f29 15 × 3 + 15 × 2.
pub const XFR_RECORDS: usize = 2 + 1 + 1 + (3 + 2 + 1) + 3 + 2 + 1 + 15 * 3 + 15 * 2;
