//! The map file's schema: what serde reads from TOML or JSON, before any
//! validation. Field names here are a contract with tools outside the repo
//! (README, "Map file reference"): add fields freely, never rename these.
//!
//! Values that can be wrong in ways an operator must be told about (addresses,
//! statuses, names) are read as strings and checked by [`super::validate`], so
//! that every error of a file is reported at once instead of serde's first.

use std::collections::BTreeMap;
use std::fmt;

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

/// A whole map file as written by the control plane.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapFile {
    /// Optional version label; a content hash is used when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// The delegated zone.
    pub zone: ZoneSection,
    /// Cells by id. A `BTreeMap` keeps compiled cell ids in a stable order.
    #[serde(default)]
    pub cells: BTreeMap<String, CellSection>,
    /// Tenant → cell id assignments.
    #[serde(default)]
    pub tenants: TenantList,
    /// What unlisted tenants get.
    #[serde(default)]
    pub placement: PlacementSection,
    /// Reload safety gates (see `reload`).
    #[serde(default)]
    pub safety: SafetySection,
    /// Planned tenant moves: `[moves.<tenant>]`, in file order.
    #[serde(default)]
    pub moves: MoveList,
    /// What a complete file declares about itself, so that a truncated or
    /// half-written one is refused.
    #[serde(default)]
    pub guard: Option<GuardSection>,
}

/// `[moves.<tenant>]`: the tenant stays in its `[tenants]` cell until `at`,
/// then is served from `to` (checked by [`super::validate`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveSection {
    /// The cell id the tenant moves to.
    pub to: String,
    /// When, RFC 3339 (`2026-12-10T10:00:00Z`).
    pub at: String,
}

/// `[moves]`, every entry as written: a JSON object may repeat a key, which
/// a map type would silently collapse, and a tenant moved twice must be
/// reported.
#[derive(Debug, Default)]
pub struct MoveList(pub Vec<(String, MoveSection)>);

impl<'de> Deserialize<'de> for MoveList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MoveList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of tenant = { to = \"cell id\", at = \"RFC 3339 time\" }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<MoveList, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, MoveSection>()? {
                    out.push((k, v));
                }
                Ok(MoveList(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `[guard]`: facts about the whole file that a truncated copy cannot
/// match. Written first in the file (before `[tenants]`), a cut anywhere
/// after it loses tenants and fails the count.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSection {
    /// The number of entries of `[tenants]`.
    pub tenants: u64,
}

/// `[zone]`: the delegated zone and its apex records.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSection {
    /// Absolute zone name, with trailing dot.
    pub origin: String,
    /// TTL of tenant and cell answers.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// TTL of a moving tenant's answers from `at - ttl` until `at + ttl`
    /// (see `[moves]`); at most `ttl`. Default: 5, or `ttl` if smaller.
    #[serde(default)]
    pub move_ttl: Option<u32>,
    /// TTL of negative answers; also the SOA MINIMUM field (RFC 2308).
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: u32,
    /// NS records of the apex.
    pub nameservers: Vec<String>,
    /// SOA RNAME.
    pub hostmaster: String,
    /// Addresses of in-zone nameservers, by nameserver name.
    #[serde(default)]
    pub glue: BTreeMap<String, Vec<String>>,
    /// TTL of the SOA and NS records and of glue.
    #[serde(default = "default_apex_ttl")]
    pub apex_ttl: u32,
    /// SOA REFRESH, for secondaries.
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    /// SOA RETRY, for secondaries.
    #[serde(default = "default_retry")]
    pub retry: u32,
    /// SOA EXPIRE, for secondaries.
    #[serde(default = "default_expire")]
    pub expire: u32,
    /// The map's own SOA serial: every instance fed this file serves it
    /// (see the `live` part's serial module). None: the clock decides.
    #[serde(default)]
    pub serial: Option<u32>,
}

/// `[cells.<id>]`: one cell.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSection {
    /// The cell's DNS name; goes into tokens.
    pub hostname: String,
    /// IPv4 endpoint addresses.
    #[serde(default)]
    pub ipv4: Vec<String>,
    /// IPv6 endpoint addresses.
    #[serde(default)]
    pub ipv6: Vec<String>,
    /// Free-form region name.
    #[serde(default)]
    pub region: String,
    /// `active`, `draining` or `down`.
    #[serde(default = "default_status")]
    pub status: String,
    /// Share of hashed tenants.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Where this cell's tenants go while it is down.
    #[serde(default)]
    pub failover: Option<String>,
    /// Active health probing of the cell's endpoints; none: no probing.
    #[serde(default)]
    pub health: Option<HealthSection>,
}

/// `[cells.<id>.health]`: how the cell's endpoints are probed. Every
/// address of the cell is probed on `port`; values are checked by
/// [`super::validate`] (ranges, `timeout_ms < interval_ms`, `min_up` at most
/// the number of addresses).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `http` (a 2xx status is up) or `tcp` (a connection is up).
    pub probe: String,
    /// The port probed on every address of the cell.
    pub port: u32,
    /// The path of an HTTP probe (http only); default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Time between two probes of one endpoint.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long one probe may take before it counts as failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes before a down endpoint counts as up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures before an endpoint counts as down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Fewer endpoints up than this: the cell is unhealthy.
    #[serde(default = "default_min_up")]
    pub min_up: u32,
}

/// `[placement]`: what a tenant that is not listed gets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// `nxdomain` or `hash`.
    #[serde(default = "default_unknown")]
    pub unknown: String,
}

impl Default for PlacementSection {
    fn default() -> Self {
        Self {
            unknown: default_unknown(),
        }
    }
}

/// `[safety]`: gates a reload must pass (see `reload`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetySection {
    /// Largest fraction of listed tenants a reload may move to another cell.
    #[serde(default = "default_max_fraction")]
    pub max_moved_fraction: f64,
    /// Largest fraction of listed tenants a reload may remove.
    #[serde(default = "default_max_fraction")]
    pub max_removed_fraction: f64,
    /// An explicit override that lets one change past the gates. It names
    /// the change (free text, logged); it applies only to the reload that
    /// first sees this exact value.
    #[serde(default)]
    pub allow_mass_change: Option<String>,
    /// Largest fraction of the serving cells health may take out at once;
    /// beyond it, health is ignored for every cell (fail-static).
    #[serde(default = "default_max_unhealthy_fraction")]
    pub max_unhealthy_fraction: f64,
}

impl Default for SafetySection {
    fn default() -> Self {
        Self {
            max_moved_fraction: default_max_fraction(),
            max_removed_fraction: default_max_fraction(),
            allow_mass_change: None,
            max_unhealthy_fraction: default_max_unhealthy_fraction(),
        }
    }
}

/// Default SOA REFRESH: five minutes. The zone changes often and NOTIFY
/// (retried until acknowledged, for up to this long) tells secondaries at
/// once; the refresh only bounds how stale a secondary that missed every
/// NOTIFY can get, for the price of one SOA query per secondary every five
/// minutes.
pub const DEFAULT_REFRESH: u32 = 300;
/// Default SOA RETRY: one minute between refresh attempts that failed.
pub const DEFAULT_RETRY: u32 = 60;

fn default_ttl() -> u32 {
    30
}
/// `zone.move_ttl` when the map gives none (capped at `zone.ttl`).
pub const DEFAULT_MOVE_TTL: u32 = 5;
fn default_negative_ttl() -> u32 {
    30
}
fn default_apex_ttl() -> u32 {
    3600
}
fn default_refresh() -> u32 {
    DEFAULT_REFRESH
}
fn default_retry() -> u32 {
    DEFAULT_RETRY
}
fn default_expire() -> u32 {
    1_209_600
}
fn default_status() -> String {
    "active".to_owned()
}
fn default_weight() -> u32 {
    100
}
fn default_unknown() -> String {
    "nxdomain".to_owned()
}
fn default_max_fraction() -> f64 {
    0.10
}
fn default_max_unhealthy_fraction() -> f64 {
    0.5
}
fn default_interval_ms() -> u64 {
    2000
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_min_up() -> u32 {
    1
}

/// `[tenants]`, stored compactly: a million tenants must not cost a million
/// `String` pairs. Names live in one byte arena (as written); cell ids are
/// interned.
#[derive(Debug, Default)]
pub struct TenantList {
    /// All tenant names, as written, back to back.
    pub arena: String,
    /// `(offset, length, index into cell_refs)` for each tenant, in file order.
    pub entries: Vec<TenantEntry>,
    /// Distinct cell ids referenced by tenants, in first-seen order.
    pub cell_refs: Vec<String>,
}

/// One `tenant = "cell"` line of `[tenants]`.
#[derive(Debug, Clone, Copy)]
pub struct TenantEntry {
    /// Byte offset of the name in [`TenantList::arena`].
    pub offset: u32,
    /// Byte length of the name.
    pub len: u32,
    /// Index into [`TenantList::cell_refs`].
    pub cell_ref: u32,
}

impl TenantList {
    /// The name of entry `e`, as written in the file.
    pub fn name(&self, e: &TenantEntry) -> &str {
        &self.arena[e.offset as usize..(e.offset + e.len) as usize]
    }

    /// The cell id entry `e` names.
    pub fn cell(&self, e: &TenantEntry) -> &str {
        &self.cell_refs[e.cell_ref as usize]
    }

    /// Number of tenants listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no tenant is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Iterates `(tenant, cell id)` in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|e| (self.name(e), self.cell(e)))
    }
}

impl<'de> Deserialize<'de> for TenantList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TenantList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of tenant = \"cell id\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<TenantList, A::Error> {
                let mut out = TenantList::default();
                let mut interned: HashMap<String, u32> = HashMap::new();
                if let Some(n) = m.size_hint() {
                    out.entries.reserve(n);
                }
                loop {
                    let offset = u32::try_from(out.arena.len())
                        .map_err(|_| de::Error::custom("tenant table larger than 4 GiB"))?;
                    if m.next_key_seed(AppendStr(&mut out.arena))?.is_none() {
                        break;
                    }
                    let len = out.arena.len() as u32 - offset;
                    let cell_ref = m.next_value_seed(Intern {
                        interned: &mut interned,
                        refs: &mut out.cell_refs,
                    })?;
                    out.entries.push(TenantEntry {
                        offset,
                        len,
                        cell_ref,
                    });
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// Appends a string to an arena without an allocation per string.
struct AppendStr<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for AppendStr<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for AppendStr<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

/// Reads a cell id and returns its interned index.
struct Intern<'a> {
    interned: &'a mut HashMap<String, u32>,
    refs: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Intern<'_> {
    type Value = u32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Intern<'_> {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cell id (string)")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        if let Some(&i) = self.interned.get(v) {
            return Ok(i);
        }
        let i = u32::try_from(self.refs.len()).map_err(|_| E::custom("too many cell ids"))?;
        self.refs.push(v.to_owned());
        self.interned.insert(v.to_owned(), i);
        Ok(i)
    }
}
