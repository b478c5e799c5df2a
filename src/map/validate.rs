//! Validation: every rule a map must meet before it may be served. All
//! problems of a file are collected; each names its field, and its line once
//! [`locate`] has looked it up.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;

use super::Source;
use super::failover::{self, Chain};
use super::index::TenantIndex;
use super::locate::Locator;
use super::schema::HealthSection;
use super::schema::MapFile;
use super::snapshot::{CellId, HealthCheck, Move, Placement, Probe, Safety, Status};

/// Largest TTL accepted for answers and negative answers (one day).
pub const MAX_TTL: u32 = 86_400;
/// Largest TTL accepted for SOA/NS/glue (one week).
pub const MAX_APEX_TTL: u32 = 604_800;
/// Largest SOA timer (RFC 1982 serial arithmetic: 2^31 - 1).
pub const MAX_SOA_TIMER: u32 = i32::MAX as u32;
/// Largest number of cells in a map (ids are `u16`).
pub const MAX_CELLS: usize = 4096;
/// Largest cell weight.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Shortest probe interval (`[cells.<id>.health] interval_ms`): a floor so
/// that a map cannot turn cellns into a load generator against its cells.
pub const MIN_PROBE_INTERVAL_MS: u64 = 250;
/// Longest probe interval (one hour).
pub const MAX_PROBE_INTERVAL_MS: u64 = 3_600_000;
/// Shortest probe timeout.
pub const MIN_PROBE_TIMEOUT_MS: u64 = 10;
/// Largest `rise` and `fall`.
pub const MAX_RISE_FALL: u32 = 100;
/// Longest HTTP probe path.
pub const MAX_PROBE_PATH: usize = 1024;

/// One problem in a map file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// File name (filled in by [`locate`]).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted field path, e.g. `cells.use1-a.failover`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}: {}", self.file, l, self.field, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.field, self.message),
        }
    }
}

/// A problem before its line is known: the field as path segments.
#[derive(Debug)]
pub struct RawIssue {
    path: Vec<String>,
    message: String,
}

/// Fills in file names and lines, and sorts by line.
pub(crate) fn locate(raw: Vec<RawIssue>, src: Source<'_>) -> Vec<Issue> {
    let wanted: Vec<Vec<&str>> = raw
        .iter()
        .map(|r| r.path.iter().map(String::as_str).collect())
        .collect();
    let loc = Locator::new(src.text, src.format, &wanted);
    let mut out: Vec<Issue> = raw
        .iter()
        .zip(&wanted)
        .map(|(r, segs)| Issue {
            file: src.name.to_owned(),
            line: loc.line(segs),
            field: if segs.is_empty() {
                "map".to_owned()
            } else {
                field_name(segs)
            },
            message: r.message.clone(),
        })
        .collect();
    out.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
    out
}

/// Renders a path as TOML would write it (quoting segments with dots).
fn field_name(segs: &[&str]) -> String {
    segs.iter()
        .map(|s| {
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                (*s).to_owned()
            } else {
                format!("\"{s}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A map that passed validation, with its values in typed form.
#[derive(Debug)]
pub struct Checked {
    pub(crate) origin: Name,
    pub(crate) ttl: u32,
    pub(crate) move_ttl: u32,
    pub(crate) negative_ttl: u32,
    pub(crate) apex_ttl: u32,
    pub(crate) refresh: u32,
    pub(crate) retry: u32,
    pub(crate) expire: u32,
    /// The declared SOA serial.
    pub(crate) serial: Option<u32>,
    pub(crate) nameservers: Vec<Name>,
    pub(crate) hostmaster: Name,
    pub(crate) glue: Vec<(Name, Vec<IpAddr>)>,
    pub(crate) cells: Vec<CheckedCell>,
    /// Listed tenants.
    pub(crate) tenants: TenantIndex,
    pub(crate) placement: Placement,
    pub(crate) safety: Safety,
    pub(crate) moves: Vec<Move>,
}

/// A validated cell.
#[derive(Debug)]
pub(crate) struct CheckedCell {
    pub(crate) id: String,
    pub(crate) hostname: Name,
    pub(crate) in_zone: bool,
    pub(crate) ipv4: Vec<Ipv4Addr>,
    pub(crate) ipv6: Vec<Ipv6Addr>,
    pub(crate) region: String,
    pub(crate) status: Status,
    pub(crate) weight: u32,
    pub(crate) failover: Option<CellId>,
    pub(crate) serving: CellId,
    pub(crate) failover_path: Vec<CellId>,
    pub(crate) health: Option<HealthCheck>,
}

/// Most problems reported for one file: a file of junk can have millions,
/// and each costs memory (and a line lookup); the rest are counted.
pub const MAX_ISSUES: usize = 100;

/// The problems found so far: the first [`MAX_ISSUES`], and how many more.
struct Issues(Vec<RawIssue>, usize);

impl Issues {
    fn push(&mut self, path: &[&str], message: impl Into<String>) {
        if self.0.len() >= MAX_ISSUES {
            self.1 += 1;
            return;
        }
        self.0.push(RawIssue {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            message: message.into(),
        });
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every problem kept, with one more saying how many were not.
    fn into_vec(mut self) -> Vec<RawIssue> {
        if self.1 > 0 {
            self.0.push(RawIssue {
                path: Vec::new(),
                message: format!(
                    "and {} more error(s) not listed (only the first {MAX_ISSUES} are)",
                    self.1
                ),
            });
        }
        self.0
    }
}

/// Parses an absolute domain name, or says why it is not one.
fn parse_abs_name(s: &str) -> Result<Name, String> {
    if !s.ends_with('.') {
        return Err(format!("`{s}` must be an absolute name ending with a dot"));
    }
    if s == "." {
        return Err("the root name is not allowed here".to_owned());
    }
    let name = Name::from_ascii(s).map_err(|e| format!("`{s}` is not a valid domain name: {e}"))?;
    if name.len() > 254 {
        return Err(format!("`{s}` is longer than 253 characters"));
    }
    if name.iter().any(|l| l.is_empty()) {
        return Err(format!("`{s}` has an empty label"));
    }
    Ok(name)
}

/// Why `s` is not one hostname-style DNS label (RFC 1123 letters, digits,
/// hyphens; 1..=63 bytes; no leading or trailing hyphen), if it is not.
pub fn label_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".to_owned());
    }
    if s.len() > 63 {
        return Some(format!(
            "is {} bytes long; a DNS label has at most 63",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Some(format!(
            "contains {c:?}; a tenant id is one DNS label of letters, digits and hyphens"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("starts or ends with a hyphen".to_owned());
    }
    None
}

fn check_range(issues: &mut Issues, path: &[&str], v: u32, min: u32, max: u32) -> u32 {
    if v < min || v > max {
        issues.push(path, format!("{v} is out of range ({min}..={max})"));
    }
    v
}

/// Checks every rule; returns the typed map or every problem found.
pub fn validate(map: &MapFile) -> Result<Checked, Vec<RawIssue>> {
    let mut checked = validate_over(map)?;
    checked.tenants.adopt_arena(map.tenants.arena.clone());
    Ok(checked)
}

/// [`validate`], consuming the parsed map: the tenant index takes over its
/// name arena instead of copying it (a reload of a million tenants peaks a
/// few megabytes lower).
pub fn validate_owned(mut map: MapFile) -> Result<Checked, Vec<RawIssue>> {
    let mut checked = validate_over(&map)?;
    let arena = std::mem::take(&mut map.tenants.arena);
    drop(map);
    checked.tenants.adopt_arena(arena);
    Ok(checked)
}

/// Checks every rule; the tenant index of the result is built over the
/// parsed map's name arena and still needs it
/// ([`TenantIndex::adopt_arena`]).
fn validate_over(map: &MapFile) -> Result<Checked, Vec<RawIssue>> {
    let mut issues = Issues(Vec::new(), 0);
    let z = &map.zone;

    if let Some(v) = &map.version
        && (v.is_empty() || v.len() > 128 || v.chars().any(|c| c.is_control()))
    {
        issues.push(&["version"], "must be 1..=128 printable characters");
    }

    // Zone.
    let origin = match parse_abs_name(&z.origin) {
        Ok(n) => n,
        Err(e) => {
            issues.push(&["zone", "origin"], e);
            Name::root()
        }
    };
    let origin_ok = !origin.is_root();
    let in_zone = |n: &Name| origin_ok && origin.zone_of(n);
    let ttl = check_range(&mut issues, &["zone", "ttl"], z.ttl, 1, MAX_TTL);
    // The short TTL of a move must be short: at most the normal one.
    let move_ttl = match z.move_ttl {
        None => super::schema::DEFAULT_MOVE_TTL.min(ttl),
        Some(m) => check_range(
            &mut issues,
            &["zone", "move_ttl"],
            m,
            1,
            ttl.clamp(1, MAX_TTL),
        ),
    };
    let negative_ttl = check_range(
        &mut issues,
        &["zone", "negative_ttl"],
        z.negative_ttl,
        1,
        MAX_TTL,
    );
    let apex_ttl = check_range(
        &mut issues,
        &["zone", "apex_ttl"],
        z.apex_ttl,
        1,
        MAX_APEX_TTL,
    );
    let refresh = check_range(
        &mut issues,
        &["zone", "refresh"],
        z.refresh,
        1,
        MAX_SOA_TIMER,
    );
    let retry = check_range(&mut issues, &["zone", "retry"], z.retry, 1, MAX_SOA_TIMER);
    let expire = check_range(&mut issues, &["zone", "expire"], z.expire, 1, MAX_SOA_TIMER);
    if z.serial == Some(0) {
        issues.push(
            &["zone", "serial"],
            "must be at least 1 (leave it out to let the clock decide)",
        );
    }

    let hostmaster = parse_abs_name(&z.hostmaster).unwrap_or_else(|e| {
        issues.push(&["zone", "hostmaster"], e);
        Name::root()
    });

    // Every in-zone name other than tenants, to catch collisions.
    let mut owned_names: HashMap<Name, String> = HashMap::new();

    if z.nameservers.is_empty() {
        issues.push(
            &["zone", "nameservers"],
            "at least one nameserver is required",
        );
    }
    let mut nameservers = Vec::new();
    for (i, ns) in z.nameservers.iter().enumerate() {
        let idx = i.to_string();
        match parse_abs_name(ns) {
            Ok(n) => {
                if nameservers.iter().any(|m: &Name| m.eq_case(&n) || *m == n) {
                    issues.push(
                        &["zone", "nameservers", &idx],
                        format!("`{ns}` is listed twice"),
                    );
                } else if in_zone(&n) {
                    if n == origin {
                        issues.push(
                            &["zone", "nameservers", &idx],
                            "a nameserver may not be the zone apex itself",
                        );
                    } else if !z
                        .glue
                        .keys()
                        .any(|g| Name::from_ascii(g).is_ok_and(|g| g == n))
                    {
                        issues.push(
                            &["zone", "nameservers", &idx],
                            format!(
                                "`{ns}` is inside the zone and needs glue addresses in [zone.glue]"
                            ),
                        );
                    }
                    owned_names.insert(n.to_lowercase(), format!("nameserver `{ns}`"));
                }
                nameservers.push(n);
            }
            Err(e) => issues.push(&["zone", "nameservers", &idx], e),
        }
    }
    let mut glue = Vec::new();
    for (name, addrs) in &z.glue {
        let path = ["zone", "glue", name.as_str()];
        let Ok(n) = parse_abs_name(name).map_err(|e| issues.push(&path, e)) else {
            continue;
        };
        if !nameservers.contains(&n) {
            issues.push(&path, "glue for a name that is not in zone.nameservers");
            continue;
        }
        if !in_zone(&n) {
            issues.push(
                &path,
                "glue is only needed (and served) for nameservers inside the zone",
            );
            continue;
        }
        if addrs.is_empty() {
            issues.push(&path, "at least one address is required");
        }
        let mut parsed = Vec::new();
        for a in addrs {
            match IpAddr::from_str(a) {
                Ok(ip) => parsed.push(ip),
                Err(_) => issues.push(&path, format!("`{a}` is not an IP address")),
            }
        }
        glue.push((n, parsed));
    }

    // Cells.
    if map.cells.is_empty() {
        issues.push(&["cells"], "at least one cell is required");
    }
    if map.cells.len() > MAX_CELLS {
        issues.push(
            &["cells"],
            format!("at most {MAX_CELLS} cells are supported"),
        );
    }
    let ids: HashMap<&str, CellId> = map
        .cells
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), CellId(i as u16)))
        .collect();
    let mut cells = Vec::new();
    let mut hostnames: HashMap<Name, &str> = HashMap::new();
    for (id, c) in &map.cells {
        let p = |f: &'static str| -> [&str; 3] { ["cells", id.as_str(), f] };
        if id.is_empty()
            || id.len() > 63
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            issues.push(
                &["cells", id],
                "a cell id is 1..=63 letters, digits, '-' or '_' (it is used in metrics labels)",
            );
        }
        let hostname = match parse_abs_name(&c.hostname) {
            Ok(n) => n,
            Err(e) => {
                issues.push(&p("hostname"), e);
                Name::root()
            }
        };
        let mut ipv4 = Vec::new();
        for a in &c.ipv4 {
            match Ipv4Addr::from_str(a) {
                Ok(ip) if ipv4.contains(&ip) => {
                    issues.push(&p("ipv4"), format!("`{a}` is listed twice"))
                }
                Ok(ip) => ipv4.push(ip),
                Err(_) => issues.push(&p("ipv4"), format!("`{a}` is not an IPv4 address")),
            }
        }
        let mut ipv6 = Vec::new();
        for a in &c.ipv6 {
            match Ipv6Addr::from_str(a) {
                Ok(ip) if ipv6.contains(&ip) => {
                    issues.push(&p("ipv6"), format!("`{a}` is listed twice"))
                }
                Ok(ip) => ipv6.push(ip),
                Err(_) => issues.push(&p("ipv6"), format!("`{a}` is not an IPv6 address")),
            }
        }
        let hostname_in_zone = !hostname.is_root() && in_zone(&hostname);
        if !hostname.is_root() {
            let lower = hostname.to_lowercase();
            if let Some(other) = hostnames.insert(lower.clone(), id) {
                issues.push(
                    &p("hostname"),
                    format!("cell `{other}` has the same hostname"),
                );
            } else if hostname_in_zone {
                if hostname == origin {
                    issues.push(&p("hostname"), "a cell hostname may not be the zone apex");
                } else if let Some(what) = owned_names.get(&lower) {
                    issues.push(&p("hostname"), format!("collides with {what}"));
                }
                owned_names.insert(lower, format!("the hostname of cell `{id}`"));
            }
        }
        if hostname_in_zone && c.ipv4.is_empty() && c.ipv6.is_empty() {
            issues.push(
                &["cells", id],
                "the cell has no way to answer: its hostname is inside the zone but it has no \
                 ipv4 or ipv6 addresses (give addresses, or an out-of-zone hostname for a CNAME)",
            );
        }
        let status = match c.status.as_str() {
            "active" => Status::Active,
            "draining" => Status::Draining,
            "down" => Status::Down,
            other => {
                issues.push(
                    &p("status"),
                    format!("`{other}` is not one of active, draining, down"),
                );
                Status::Active
            }
        };
        let weight = check_range(&mut issues, &p("weight"), c.weight, 0, MAX_WEIGHT);
        let failover = match &c.failover {
            None => None,
            Some(f) if f == id => {
                issues.push(&p("failover"), "a cell cannot fail over to itself");
                None
            }
            Some(f) => match ids.get(f.as_str()) {
                Some(&cid) => Some(cid),
                None => {
                    issues.push(&p("failover"), format!("unknown cell `{f}`"));
                    None
                }
            },
        };
        let health = c
            .health
            .as_ref()
            .and_then(|h| check_health(&mut issues, id, h, ipv4.len() + ipv6.len()));
        cells.push(CheckedCell {
            id: id.clone(),
            hostname,
            in_zone: hostname_in_zone,
            ipv4,
            ipv6,
            region: c.region.clone(),
            status,
            weight,
            failover,
            serving: CellId(cells.len() as u16),
            failover_path: Vec::new(),
            health,
        });
    }

    // Failover chains: from each cell, follow failover links through down
    // cells; the chain must reach a cell that serves.
    let chain_errors = resolve_failover(&mut cells);
    for (cell, msg) in chain_errors {
        issues.push(&["cells", &cells[cell.0 as usize].id, "failover"], msg);
    }

    // Empty non-terminals below in-zone names, for collision checks.
    if origin_ok {
        let names: Vec<Name> = owned_names.keys().cloned().collect();
        for n in names {
            let mut p = n.base_name();
            while p.num_labels() > origin.num_labels() {
                owned_names
                    .entry(p.to_lowercase())
                    .or_insert_with(|| format!("a name above `{n}`"));
                p = p.base_name();
            }
        }
    }

    // Tenants. Names one label below the apex that something else owns.
    let taken: HashMap<Vec<u8>, &str> = if origin_ok {
        owned_names
            .iter()
            .filter(|(n, _)| n.num_labels() == origin.num_labels() + 1)
            .filter_map(|(n, what)| Some((n.iter().next()?.to_ascii_lowercase(), what.as_str())))
            .collect()
    } else {
        HashMap::new()
    };
    // The index is built over the parsed list's names (no copy: a million
    // tenants must not cost twice their memory at reload).
    let mut label = [0u8; 63];
    let valid = map.tenants.entries.iter().enumerate().filter_map(|(i, e)| {
        let (name, cell) = (map.tenants.name(e), map.tenants.cell(e));
        let path = ["tenants", name];
        if let Some(problem) = label_problem(name) {
            issues.push(&path, format!("tenant id `{name}` {problem}"));
            return None;
        }
        let lower = &mut label[..name.len()];
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        if let Some(what) = taken.get(&*lower) {
            issues.push(&path, format!("tenant `{name}` collides with {what}"));
        }
        match ids.get(cell) {
            Some(&cid) => Some((i, e.offset, name.len() as u8, cid)),
            None => {
                issues.push(&path, format!("unknown cell `{cell}`"));
                None
            }
        }
    });
    let (tenants, duplicates) =
        TenantIndex::build_over(map.tenants.arena.as_bytes(), map.tenants.len(), valid);
    for i in duplicates {
        let name = map.tenants.name(&map.tenants.entries[i]);
        issues.push(
            &["tenants", name],
            format!("tenant `{name}` is listed twice (tenant ids are case-insensitive)"),
        );
    }

    let moves = check_moves(&mut issues, map, &tenants, &ids, &cells);

    // Placement.
    let placement = match map.placement.unknown.as_str() {
        "nxdomain" => Placement::Nxdomain,
        "hash" => {
            if !cells
                .iter()
                .any(|c| c.status == Status::Active && c.weight > 0)
            {
                issues.push(
                    &["placement", "unknown"],
                    "hash placement needs at least one active cell with weight > 0",
                );
            }
            Placement::Hash
        }
        other => {
            issues.push(
                &["placement", "unknown"],
                format!("`{other}` is not one of nxdomain, hash"),
            );
            Placement::Nxdomain
        }
    };

    let s = &map.safety;
    for (f, v) in [
        ("max_moved_fraction", s.max_moved_fraction),
        ("max_removed_fraction", s.max_removed_fraction),
        ("max_unhealthy_fraction", s.max_unhealthy_fraction),
    ] {
        if !(0.0..=1.0).contains(&v) {
            issues.push(
                &["safety", f],
                format!("{v} is not a fraction between 0 and 1"),
            );
        }
    }
    if let Some(o) = &s.allow_mass_change
        && o.trim().is_empty()
    {
        issues.push(
            &["safety", "allow_mass_change"],
            "must say why (a non-empty reason)",
        );
    }

    // The guard: a file cut short (a writer still writing, a copy that
    // stopped) has fewer tenants than it declares.
    if let Some(g) = &map.guard
        && g.tenants != map.tenants.len() as u64
    {
        issues.push(
            &["guard", "tenants"],
            format!(
                "the map declares {} tenant(s) but lists {}: a truncated or partly written file? \
                 (write the map to a temporary file and rename it over the map)",
                g.tenants,
                map.tenants.len()
            ),
        );
    }

    if !issues.is_empty() {
        return Err(issues.into_vec());
    }
    Ok(Checked {
        serial: z.serial,
        origin,
        ttl,
        move_ttl,
        negative_ttl,
        apex_ttl,
        refresh,
        retry,
        expire,
        nameservers,
        hostmaster,
        glue,
        cells,
        tenants,
        placement,
        safety: Safety {
            max_moved_fraction: s.max_moved_fraction,
            max_removed_fraction: s.max_removed_fraction,
            allow_mass_change: s.allow_mass_change.clone(),
            max_unhealthy_fraction: s.max_unhealthy_fraction,
        },
        moves,
    })
}

/// Parses an RFC 3339 time naming a whole second (tokens carry whole
/// seconds: a token that must expire by the flip needs the flip on one).
pub fn parse_move_time(s: &str) -> Result<SystemTime, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("`{s}` is not an RFC 3339 time (write it as 2026-12-10T10:00:00Z)"))?;
    if t.nanosecond() != 0 {
        return Err(format!(
            "`{s}` has a fraction of a second; a move happens on a whole second"
        ));
    }
    let secs = t.unix_timestamp();
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .ok_or_else(|| format!("`{s}` is before 1970"))
}

/// Checks `[moves]`: each names a listed tenant once, a known cell other
/// than the tenant's own that is not down in the map, and a valid time.
/// A tenant moved twice is an error, not "the last one wins": the operator
/// must say which move is meant. A move to the cell the tenant already has
/// is an error too (it would change nothing; the usual cause is a map
/// cleaned up after the move that kept the `[moves]` entry). `tenants` has
/// not adopted its arena yet: names are looked up in the parsed list's.
fn check_moves(
    issues: &mut Issues,
    map: &MapFile,
    tenants: &TenantIndex,
    ids: &HashMap<&str, CellId>,
    cells: &[CheckedCell],
) -> Vec<Move> {
    let mut out: Vec<Move> = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    for (name, m) in &map.moves.0 {
        let p = |f: &'static str| -> [&str; 3] { ["moves", name.as_str(), f] };
        if let Some(problem) = label_problem(name) {
            issues.push(&["moves", name], format!("tenant id `{name}` {problem}"));
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if seen.insert(lower.clone(), ()).is_some() {
            issues.push(
                &["moves", name],
                format!("tenant `{name}` is moved twice (tenant ids are case-insensitive); keep one move"),
            );
            continue;
        }
        let from = tenants.get_over(map.tenants.arena.as_bytes(), name.as_bytes());
        if from.is_none() {
            issues.push(
                &["moves", name],
                format!("unknown tenant `{name}`: only tenants listed in [tenants] can be moved"),
            );
        }
        let to = match ids.get(m.to.as_str()) {
            None => {
                issues.push(&p("to"), format!("unknown cell `{}`", m.to));
                None
            }
            Some(&to) if cells[usize::from(to.0)].status == Status::Down => {
                issues.push(
                    &p("to"),
                    format!(
                        "cell `{}` is down in the map: a tenant cannot be moved to a down cell",
                        m.to
                    ),
                );
                None
            }
            Some(&to) if Some(to) == from => {
                issues.push(
                    &p("to"),
                    format!(
                        "tenant `{name}` is already in cell `{}` ([tenants]); remove the move (or name another cell)",
                        m.to
                    ),
                );
                None
            }
            Some(&to) => Some(to),
        };
        let at = parse_move_time(&m.at)
            .map_err(|e| issues.push(&p("at"), e))
            .ok();
        if let (Some(from), Some(to), Some(at)) = (from, to, at) {
            out.push(Move {
                tenant: lower,
                from,
                to,
                at,
            });
        }
    }
    out
}

/// Checks `[cells.<id>.health]` of a cell with `endpoints` addresses; the
/// typed settings when every rule holds.
fn check_health(
    issues: &mut Issues,
    id: &str,
    h: &HealthSection,
    endpoints: usize,
) -> Option<HealthCheck> {
    let before = issues.0.len();
    let p = |f: &'static str| -> [&str; 4] { ["cells", id, "health", f] };
    let probe = match h.probe.as_str() {
        "http" => Probe::Http,
        "tcp" => Probe::Tcp,
        other => {
            issues.push(&p("probe"), format!("`{other}` is not one of http, tcp"));
            Probe::Tcp
        }
    };
    if !(1..=65_535).contains(&h.port) {
        issues.push(
            &p("port"),
            format!("{} is out of range (1..=65535)", h.port),
        );
    }
    let path = match (&h.path, probe) {
        (None, _) => "/".to_owned(),
        (Some(_), Probe::Tcp) if h.probe == "tcp" => {
            issues.push(&p("path"), "a path applies to http probes only");
            "/".to_owned()
        }
        (Some(path), _) => {
            if !path.starts_with('/') {
                issues.push(&p("path"), format!("`{path}` must start with \"/\""));
            } else if path.len() > MAX_PROBE_PATH {
                issues.push(
                    &p("path"),
                    format!("is {} bytes long; at most {MAX_PROBE_PATH}", path.len()),
                );
            } else if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
                issues.push(
                    &p("path"),
                    format!("contains {c:?}; a probe path is printable ASCII without spaces (percent-encode the rest)"),
                );
            }
            path.clone()
        }
    };
    let interval_ok = (MIN_PROBE_INTERVAL_MS..=MAX_PROBE_INTERVAL_MS).contains(&h.interval_ms);
    if !interval_ok {
        issues.push(
            &p("interval_ms"),
            format!(
                "{} is out of range ({MIN_PROBE_INTERVAL_MS}..={MAX_PROBE_INTERVAL_MS})",
                h.interval_ms
            ),
        );
    }
    if h.timeout_ms < MIN_PROBE_TIMEOUT_MS {
        issues.push(
            &p("timeout_ms"),
            format!(
                "{} is below the minimum of {MIN_PROBE_TIMEOUT_MS}",
                h.timeout_ms
            ),
        );
    } else if interval_ok && h.timeout_ms >= h.interval_ms {
        issues.push(
            &p("timeout_ms"),
            format!(
                "{} must be less than interval_ms ({}): a probe ends before the next starts",
                h.timeout_ms, h.interval_ms
            ),
        );
    }
    for (f, v) in [("rise", h.rise), ("fall", h.fall)] {
        if !(1..=MAX_RISE_FALL).contains(&v) {
            issues.push(&p(f), format!("{v} is out of range (1..={MAX_RISE_FALL})"));
        }
    }
    if h.min_up == 0 {
        issues.push(&p("min_up"), "must be at least 1");
    } else if h.min_up as usize > endpoints {
        issues.push(
            &p("min_up"),
            format!(
                "{} is more than the cell's {endpoints} address(es): the cell could never be healthy \
                 (health probes the cell's ipv4 and ipv6 addresses)",
                h.min_up
            ),
        );
    }
    (issues.0.len() == before).then(|| HealthCheck {
        probe,
        port: h.port as u16,
        path,
        interval: std::time::Duration::from_millis(h.interval_ms),
        timeout: std::time::Duration::from_millis(h.timeout_ms),
        rise: h.rise,
        fall: h.fall,
        min_up: h.min_up,
    })
}

/// Follows failover links; sets `serving` and `failover_path` for each cell
/// and returns the cells whose chain loops or ends in a down cell. A serving
/// cell's chain is checked from its failover target on, so that a broken
/// chain is caught before the cell goes down.
fn resolve_failover(cells: &mut [CheckedCell]) -> Vec<(CellId, String)> {
    let mut errors = Vec::new();
    for i in 0..cells.len() {
        let cell = CellId(i as u16);
        let is_down = |c: CellId| cells[usize::from(c.0)].status == Status::Down;
        let start = match (is_down(cell), cells[i].failover) {
            (true, _) => cell,
            (false, Some(next)) => next,
            (false, None) => continue,
        };
        let names = |path: &[CellId]| {
            path.iter()
                .map(|c| cells[usize::from(c.0)].id.as_str())
                .collect::<Vec<_>>()
        };
        match failover::follow(start, |c| cells[usize::from(c.0)].failover, is_down) {
            Chain::Serves { serving, path } => {
                if is_down(cell) {
                    cells[i].serving = serving;
                    cells[i].failover_path = path;
                }
            }
            Chain::Loops { path } => errors.push((
                cell,
                format!(
                    "failover chain loops through down cells: {}",
                    names(&path).join(" → ")
                ),
            )),
            Chain::DeadEnd { path } => errors.push((
                cell,
                format!(
                    "failover chain ends in down cell `{}`, which has no failover",
                    names(&path).last().copied().unwrap_or_default()
                ),
            )),
        }
    }
    errors
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
