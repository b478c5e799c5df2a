//! The effective view: a map snapshot combined with what changes a cell's
//! status between map versions, as one immutable value.
//!
//! A cell's **effective status** decides every answer and every token:
//! an operator override (if any) beats health, which beats the map's
//! `status`; health can take a serving cell out but never bring a `down`
//! cell back. From the effective statuses follow the cell that serves
//! each cell's tenants (failover chains, [`crate::map::failover`]) and the
//! pool unlisted tenants are hashed over.
//!
//! # Health
//!
//! Health applies only to a cell that has a `[cells.<id>.health]` table,
//! serves after overrides (not `down`) and has no override (an override
//! pins the cell: its answers are the map's, whatever the probes say).
//! For such a cell, the endpoints [`Conditions::endpoints_down`] names
//! leave its answered addresses while at least `min_up` remain; with
//! fewer up, the cell is *unhealthy*: its effective status is `down`
//! ([`StatusSource::Health`]) and its tenants fail over exactly as for a
//! map `down` (its own addresses stay whole: they are still what its
//! hostname answers, and what a stranded cell keeps serving). An endpoint
//! with no verdict counts as up.
//!
//! **Fail-static:** when health would take out more than
//! `safety.max_unhealthy_fraction` of the cells that serve after
//! overrides, it is ignored for every cell (no endpoint filtered, no cell
//! taken out), and [`View::health`] says so. Route 53 answers with every
//! record when every check fails for the same reason: a probe network that
//! breaks must not empty the zone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use super::moves::Overlay;
use crate::map::failover::{self, Chain};
use crate::map::{Cell, CellId, Snapshot, Status};

/// Why a cell has its effective status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusSource {
    /// The map's `status`.
    Map,
    /// An operator override.
    Override,
    /// Health probing took the cell out (fewer than `min_up` endpoints up).
    Health,
}

impl StatusSource {
    /// The word used in the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::Override => "override",
            Self::Health => "health",
        }
    }
}

/// What, besides the map, decides the effective view. Keyed by cell id (not
/// [`CellId`]), so that it outlives map versions: a reload that keeps a cell
/// keeps what applies to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Operator overrides of a cell's status, by cell id.
    pub overrides: BTreeMap<String, Status>,
    /// Health verdicts: the endpoints found down, by cell id (cells and
    /// endpoints absent here count as up). Addresses the cell does not
    /// have, and cells without a health table, are ignored.
    pub endpoints_down: BTreeMap<String, BTreeSet<IpAddr>>,
}

/// What health did to a view (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HealthSummary {
    /// Cells that serve after overrides: the ones health could take out.
    pub serving: usize,
    /// Of those, the cells health finds unhealthy (fewer than `min_up`
    /// endpoints up), whether or not it was applied.
    pub unhealthy: usize,
    /// `unhealthy` is more than `max_unhealthy_fraction` of `serving`:
    /// health is ignored for every cell.
    pub fail_static: bool,
    /// The limit in force (`safety.max_unhealthy_fraction`).
    pub max_unhealthy_fraction: f64,
}

/// A cell as the effective view sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellState {
    /// The effective status.
    pub status: Status,
    /// What decided it.
    pub source: StatusSource,
    /// The cell that serves this cell's tenants now: itself unless it is
    /// down, else the first serving cell of its failover chain.
    pub serving: CellId,
    /// Down cells passed through to reach `serving`, starting with this one
    /// (empty unless this cell is down).
    pub failover_path: Vec<CellId>,
    /// Down, but its failover chain reaches no serving cell (it loops or
    /// dead-ends through cells an override or health took out): its
    /// tenants stay on it, since there is nowhere better to send them.
    pub stranded: bool,
    /// IPv4 endpoints answered for it (health may have left some out).
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 endpoints answered for it (health may have left some out).
    pub ipv6: Vec<Ipv6Addr>,
}

/// The effective view of one zone version. Immutable; DNS and tokens read
/// it through [`super::Store`].
#[derive(Debug)]
pub struct View {
    map: Arc<Snapshot>,
    serial: u32,
    cells: Vec<CellState>,
    hash_pool: Vec<CellId>,
    health: HealthSummary,
    /// Planned moves at the time the view was built.
    moves: Overlay,
    /// By cell: the longest TTL of the tenant answers that point at it
    /// (`None`: no tenant answer does).
    pointed: Vec<Option<u32>>,
    /// When the view was built (move phases are as of then).
    built_at: SystemTime,
}

/// What health says about one cell, before fail-static is decided.
enum Verdict {
    /// Not probed, no endpoint down, or not subject to health.
    Whole,
    /// Some endpoints down, at least `min_up` up: answer these.
    Filtered(Vec<Ipv4Addr>, Vec<Ipv6Addr>),
    /// Fewer than `min_up` endpoints up.
    Unhealthy,
}

/// Health's verdict on `cell`, whose status after overrides is
/// `(status, source)`.
fn verdict(cell: &Cell, status: Status, source: StatusSource, conditions: &Conditions) -> Verdict {
    let (Some(check), Status::Active | Status::Draining, StatusSource::Map) =
        (&cell.health, status, source)
    else {
        return Verdict::Whole;
    };
    let Some(down) = conditions.endpoints_down.get(&cell.id) else {
        return Verdict::Whole;
    };
    let up = cell.endpoints().filter(|a| !down.contains(a)).count();
    if up < check.min_up as usize {
        return Verdict::Unhealthy;
    }
    if up == cell.ipv4.len() + cell.ipv6.len() {
        return Verdict::Whole;
    }
    Verdict::Filtered(
        cell.ipv4
            .iter()
            .filter(|a| !down.contains(&IpAddr::V4(**a)))
            .copied()
            .collect(),
        cell.ipv6
            .iter()
            .filter(|a| !down.contains(&IpAddr::V6(**a)))
            .copied()
            .collect(),
    )
}

impl View {
    /// Combines `map` with `conditions`; `serial` is the SOA serial of this
    /// zone version. Conditions naming cells the map does not have are
    /// ignored (they may apply again to a later map).
    pub fn new(map: Arc<Snapshot>, conditions: &Conditions, serial: u32) -> Self {
        Self::new_at(map, conditions, serial, SystemTime::now())
    }

    /// As [`View::new`], with planned moves in the state they have at `now`.
    pub fn new_at(
        map: Arc<Snapshot>,
        conditions: &Conditions,
        serial: u32,
        now: SystemTime,
    ) -> Self {
        // Overrides first: they pin a cell.
        let mut effective: Vec<(Status, StatusSource)> = map
            .cells
            .iter()
            .map(|c| match conditions.overrides.get(&c.id) {
                Some(&s) => (s, StatusSource::Override),
                None => (c.status, StatusSource::Map),
            })
            .collect();
        // Then health, unless it would take out too many cells at once.
        let mut verdicts: Vec<Verdict> = map
            .cells
            .iter()
            .zip(&effective)
            .map(|(c, &(status, source))| verdict(c, status, source, conditions))
            .collect();
        let serving = effective.iter().filter(|(s, _)| *s != Status::Down).count();
        let unhealthy = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Unhealthy))
            .count();
        let max_unhealthy_fraction = map.safety.max_unhealthy_fraction;
        let fail_static =
            unhealthy > 0 && unhealthy as f64 > max_unhealthy_fraction * serving as f64;
        if fail_static {
            verdicts.iter_mut().for_each(|v| *v = Verdict::Whole);
        }
        for (e, v) in effective.iter_mut().zip(&verdicts) {
            if matches!(v, Verdict::Unhealthy) {
                *e = (Status::Down, StatusSource::Health);
            }
        }
        let is_down = |c: CellId| effective[usize::from(c.0)].0 == Status::Down;
        let cells = map
            .cell_ids()
            .map(|id| {
                let cell = map.cell(id);
                let (status, source) = effective[usize::from(id.0)];
                let chain = failover::follow(id, |c| map.cell(c).failover, is_down);
                let (serving, failover_path, stranded) = match chain {
                    Chain::Serves { serving, path } => (serving, path, false),
                    Chain::Loops { .. } | Chain::DeadEnd { .. } => (id, Vec::new(), true),
                };
                let (ipv4, ipv6) = match &verdicts[usize::from(id.0)] {
                    Verdict::Filtered(v4, v6) => (v4.clone(), v6.clone()),
                    Verdict::Whole | Verdict::Unhealthy => (cell.ipv4.clone(), cell.ipv6.clone()),
                };
                CellState {
                    status,
                    source,
                    serving,
                    failover_path,
                    stranded,
                    ipv4,
                    ipv6,
                }
            })
            .collect::<Vec<_>>();
        let hash_pool: Vec<CellId> = map
            .cell_ids()
            .filter(|&id| {
                cells[usize::from(id.0)].status == Status::Active && map.cell(id).weight > 0
            })
            .collect();
        let moves = Overlay::new(&map, now);
        let pointed = pointed(&map, &cells, &hash_pool, &moves);
        Self {
            moves,
            pointed,
            built_at: now,
            map,
            serial,
            cells,
            hash_pool,
            health: HealthSummary {
                serving,
                unhealthy,
                fail_static,
                max_unhealthy_fraction,
            },
        }
    }

    /// The same view with another serial.
    pub(super) fn with_serial(self, serial: u32) -> Self {
        Self { serial, ..self }
    }

    /// The view the map alone gives (no overrides, health or moves), for
    /// the offline commands (`check`, `explain`); its serial is 0.
    pub fn of_map(map: Arc<Snapshot>) -> Self {
        Self::new(map, &Conditions::default(), 0)
    }

    /// As [`View::of_map`], with planned moves as they are at `now`.
    pub fn of_map_at(map: Arc<Snapshot>, now: SystemTime) -> Self {
        Self::new_at(map, &Conditions::default(), 0, now)
    }

    /// The map snapshot this view is built on.
    #[inline]
    pub fn map(&self) -> &Snapshot {
        &self.map
    }

    /// The map snapshot, shared.
    pub fn map_arc(&self) -> &Arc<Snapshot> {
        &self.map
    }

    /// The SOA serial of this zone version.
    #[inline]
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The effective state of cell `id`.
    #[inline]
    pub fn state(&self, id: CellId) -> &CellState {
        &self.cells[usize::from(id.0)]
    }

    /// The map's description of cell `id`.
    #[inline]
    pub fn cell(&self, id: CellId) -> &Cell {
        self.map.cell(id)
    }

    /// The cell serving the tenants of cell `id` now.
    #[inline]
    pub fn serving(&self, id: CellId) -> CellId {
        self.cells[usize::from(id.0)].serving
    }

    /// Effective states, indexed by [`CellId`].
    pub fn states(&self) -> &[CellState] {
        &self.cells
    }

    /// Cells unlisted tenants are hashed over: effectively active, weight > 0.
    #[inline]
    pub fn hash_pool(&self) -> &[CellId] {
        &self.hash_pool
    }

    /// Number of cells whose effective status is `status`.
    pub fn cells_with_status(&self, status: Status) -> usize {
        self.cells.iter().filter(|c| c.status == status).count()
    }

    /// What health did to this view: as it was when the view was built
    /// (a later verdict that changes no answer publishes no new view; the
    /// health part has the current probe state).
    pub fn health(&self) -> &HealthSummary {
        &self.health
    }

    /// Whether health is ignored for every cell (fail-static).
    pub fn fail_static(&self) -> bool {
        self.health.fail_static
    }

    /// Whether `other` answers every query exactly as this view does,
    /// serial aside: same map, same effective cells. A change of
    /// fail-static counts as a change even when no answer moves, so that
    /// the view in force always says whether health is ignored.
    pub fn same_answers(&self, other: &View) -> bool {
        Arc::ptr_eq(&self.map, &other.map)
            && self.cells == other.cells
            && self.health.fail_static == other.health.fail_static
            && self.moves.states() == other.moves.states()
    }

    /// Planned moves as of when the view was built.
    pub fn moves(&self) -> &Overlay {
        &self.moves
    }

    /// When the view was built.
    pub fn built_at(&self) -> SystemTime {
        self.built_at
    }

    /// The cell assigned now to the tenant `label` and whether its answers
    /// carry `zone.move_ttl`, when a planned move affects it.
    #[inline]
    pub fn moving(&self, label: &[u8]) -> Option<(CellId, bool)> {
        self.moves.get(label)
    }

    /// The longest TTL of the tenant answers that point at cell `id` in
    /// this view, or `None` when none does (its tenants are all elsewhere:
    /// moved, or failed over). The cell's own hostname is not counted.
    pub fn pointed_ttl(&self, id: CellId) -> Option<u32> {
        self.pointed.get(usize::from(id.0)).copied().flatten()
    }
}

/// By cell, the longest TTL of the tenant answers pointing at it: every
/// cell that serves a listed tenant (after moves and failover), and the
/// hash pool when unlisted tenants are hashed.
fn pointed(
    map: &Snapshot,
    cells: &[CellState],
    hash_pool: &[CellId],
    moves: &Overlay,
) -> Vec<Option<u32>> {
    let (ttl, short) = (map.zone.ttl, map.zone.move_ttl);
    // Tenants by assigned cell, with the normal and the short TTL.
    let mut normal: Vec<i64> = map.cells.iter().map(|c| c.listed_tenants as i64).collect();
    let mut shortened = vec![0i64; map.cells.len()];
    for (tenant, assigned, is_short) in moves.affected() {
        if let Some(listed) = map.tenants.get(tenant.as_bytes()) {
            normal[usize::from(listed.0)] -= 1;
        }
        let bucket = if is_short {
            &mut shortened
        } else {
            &mut normal
        };
        bucket[usize::from(assigned.0)] += 1;
    }
    let mut out = vec![None; map.cells.len()];
    let mut point = |cell: CellId, t: u32| {
        let slot = &mut out[usize::from(cell.0)];
        *slot = Some(slot.map_or(t, |s: u32| s.max(t)));
    };
    for (i, state) in cells.iter().enumerate() {
        if normal[i] > 0 {
            point(state.serving, ttl);
        }
        if shortened[i] > 0 {
            point(state.serving, short);
        }
    }
    if map.placement == crate::map::Placement::Hash {
        for &c in hash_pool {
            point(c, ttl);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Arc<Snapshot> {
        Arc::new(crate::map::load_example().expect("example map"))
    }

    fn id(map: &Snapshot, cell: &str) -> CellId {
        map.cell_by_id(cell).expect("cell")
    }

    #[test]
    fn without_conditions_the_view_is_the_map() {
        let map = example();
        let v = View::of_map(map.clone());
        for id in map.cell_ids() {
            let (c, s) = (map.cell(id), v.state(id));
            assert_eq!((s.status, s.source), (c.status, StatusSource::Map));
            assert_eq!(s.serving, c.serving, "{}", c.id);
            assert_eq!(s.failover_path, c.failover_path, "{}", c.id);
            assert!(!s.stranded);
        }
    }

    #[test]
    fn an_override_takes_a_cell_out_and_its_tenants_fail_over() {
        let map = example();
        let (a, b) = (id(&map, "use1-a"), id(&map, "use1-b"));
        let mut cond = Conditions::default();
        cond.overrides.insert("use1-a".into(), Status::Down);
        let v = View::new(map.clone(), &cond, 9);
        assert_eq!(v.serial(), 9);
        assert_eq!(v.state(a).status, Status::Down);
        assert_eq!(v.state(a).source, StatusSource::Override);
        assert_eq!(v.serving(a), b);
        assert_eq!(v.state(a).failover_path, vec![a]);
        assert!(!v.hash_pool().contains(&a));
        // An override can also bring a down cell back.
        let usw2 = id(&map, "usw2-a");
        cond.overrides.insert("usw2-a".into(), Status::Active);
        let v = View::new(map.clone(), &cond, 10);
        assert_eq!(v.serving(usw2), usw2);
        // Unknown cells in the conditions are ignored.
        cond.overrides.insert("gone".into(), Status::Down);
        let _ = View::new(map, &cond, 11);
    }

    #[test]
    fn a_chain_with_no_serving_end_strands_the_cell() {
        let map = example();
        let a = id(&map, "use1-a");
        let mut cond = Conditions::default();
        for c in &map.cells {
            cond.overrides.insert(c.id.clone(), Status::Down);
        }
        let v = View::new(map, &cond, 1);
        assert!(v.state(a).stranded);
        assert_eq!(v.serving(a), a);
        assert!(v.hash_pool().is_empty());
    }

    #[test]
    fn same_answers_ignores_the_serial_only() {
        let map = example();
        let v1 = View::of_map(map.clone());
        let v2 = View::new(map.clone(), &Conditions::default(), 5);
        assert!(v1.same_answers(&v2));
        let mut cond = Conditions::default();
        cond.overrides.insert("use1-a".into(), Status::Draining);
        assert!(!v1.same_answers(&View::new(map.clone(), &cond, 5)));
        let other = Arc::new(crate::map::load_example().expect("example"));
        assert!(!v1.same_answers(&View::of_map(other)));
    }

    /// Cells a..d probed (2 IPv4 each, min_up 1), a → b → c → d → a;
    /// e not probed; f down in the map, probed.
    fn probed(fraction: f64) -> Arc<Snapshot> {
        let mut text = format!(
            "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns.example.net.\"]\n\
             hostmaster = \"h.example.net.\"\n[safety]\nmax_unhealthy_fraction = {fraction}\n"
        );
        for (i, (id, next)) in [
            ("a", "b"),
            ("b", "c"),
            ("c", "d"),
            ("d", "a"),
            ("e", "a"),
            ("f", "a"),
        ]
        .iter()
        .enumerate()
        {
            let status = if *id == "f" { "down" } else { "active" };
            text.push_str(&format!(
                "[cells.{id}]\nhostname = \"{id}.z.test.\"\nipv4 = [\"10.0.{i}.1\", \"10.0.{i}.2\"]\n\
                 status = \"{status}\"\nfailover = \"{next}\"\n"
            ));
            if *id != "e" {
                text.push_str(&format!(
                    "[cells.{id}.health]\nprobe = \"tcp\"\nport = 80\n"
                ));
            }
        }
        text.push_str("[tenants]\nacme = \"a\"\n");
        Arc::new(
            crate::map::load_str(crate::map::Source {
                text: &text,
                format: crate::map::Format::Toml,
                name: "probed.toml",
            })
            .expect("valid test map"),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// Conditions with `down` endpoints (`"a:1"` = 10.0.<a's index>.1).
    fn down(map: &Snapshot, endpoints: &[&str]) -> Conditions {
        let mut c = Conditions::default();
        for e in endpoints {
            let (cell, n) = e.split_once(':').expect("cell:n");
            let i = map.cell_by_id(cell).expect("cell").0;
            c.endpoints_down
                .entry(cell.to_owned())
                .or_default()
                .insert(ip(&format!("10.0.{i}.{n}")));
        }
        c
    }

    #[test]
    fn a_down_endpoint_leaves_the_answers_while_min_up_remain() {
        let map = probed(0.5);
        let a = id(&map, "a");
        let v = View::new(map.clone(), &down(&map, &["a:1"]), 1);
        let s = v.state(a);
        assert_eq!((s.status, s.source), (Status::Active, StatusSource::Map));
        assert_eq!(s.ipv4, vec!["10.0.0.2".parse::<Ipv4Addr>().expect("ip")]);
        assert_eq!(v.serving(a), a);
        // Both down: fewer than min_up (1) up: unhealthy, fails over to b,
        // and keeps its own addresses (its hostname still answers them).
        let v = View::new(map.clone(), &down(&map, &["a:1", "a:2"]), 2);
        let s = v.state(a);
        assert_eq!((s.status, s.source), (Status::Down, StatusSource::Health));
        assert_eq!(v.serving(a), id(&map, "b"));
        assert_eq!(s.failover_path, vec![a]);
        assert_eq!(s.ipv4.len(), 2);
        assert!(!v.hash_pool().contains(&a));
        assert_eq!(
            (v.health().serving, v.health().unhealthy, v.fail_static()),
            (5, 1, false)
        );
        // No verdict: up. An address the cell does not have: ignored.
        let mut c = Conditions::default();
        c.endpoints_down
            .insert("a".into(), [ip("192.0.2.99")].into());
        let v = View::new(map.clone(), &c, 3);
        assert!(v.same_answers(&View::of_map(map.clone())));
        assert_eq!(v.state(a).ipv4.len(), 2);
    }

    #[test]
    fn health_never_brings_a_down_cell_back_nor_touches_unprobed_cells() {
        let map = probed(0.5);
        let (e, f) = (id(&map, "e"), id(&map, "f"));
        let v = View::new(map.clone(), &down(&map, &["e:1", "e:2", "f:1"]), 1);
        // e has no health table: verdicts about it are ignored.
        assert_eq!(v.state(e).status, Status::Active);
        assert_eq!(v.state(e).ipv4.len(), 2);
        // f is down in the map: health neither filters nor revives it.
        assert_eq!(
            (v.state(f).status, v.state(f).source),
            (Status::Down, StatusSource::Map)
        );
        assert_eq!(v.state(f).ipv4.len(), 2);
        assert_eq!(v.health().serving, 5);
        assert_eq!(v.health().unhealthy, 0);
    }

    #[test]
    fn an_override_beats_health() {
        let map = probed(0.5);
        let (a, b) = (id(&map, "a"), id(&map, "b"));
        let mut c = down(&map, &["a:1", "a:2", "b:1"]);
        c.overrides.insert("a".into(), Status::Active);
        c.overrides.insert("b".into(), Status::Draining);
        let v = View::new(map.clone(), &c, 1);
        // Pinned by the override: health neither takes a out nor filters b.
        assert_eq!(
            (v.state(a).status, v.state(a).source),
            (Status::Active, StatusSource::Override)
        );
        assert_eq!(v.state(a).ipv4.len(), 2);
        assert_eq!(
            (v.state(b).status, v.state(b).source),
            (Status::Draining, StatusSource::Override)
        );
        assert_eq!(v.state(b).ipv4.len(), 2);
        assert_eq!(v.health().unhealthy, 0);
        // An override down beats a healthy cell.
        let mut c = Conditions::default();
        c.overrides.insert("b".into(), Status::Down);
        let v = View::new(map.clone(), &c, 2);
        assert_eq!(
            (v.state(b).status, v.state(b).source),
            (Status::Down, StatusSource::Override)
        );
        assert_eq!(v.serving(b), id(&map, "c"));
    }

    #[test]
    fn health_skips_cells_it_took_out_along_a_failover_chain() {
        let map = probed(1.0);
        let (a, c) = (id(&map, "a"), id(&map, "c"));
        let v = View::new(map.clone(), &down(&map, &["a:1", "a:2", "b:1", "b:2"]), 1);
        assert_eq!(v.serving(a), c);
        assert_eq!(v.state(a).failover_path, vec![a, id(&map, "b")]);
        // Every probed cell unhealthy (allowed by fraction 1.0): the chain
        // a → b → c → d → a loops: each is stranded and keeps its answers.
        let all = ["a:1", "a:2", "b:1", "b:2", "c:1", "c:2", "d:1", "d:2"];
        let v = View::new(map.clone(), &down(&map, &all), 2);
        assert!(v.state(a).stranded);
        assert_eq!(v.serving(a), a);
        assert_eq!(v.state(a).ipv4.len(), 2);
    }

    #[test]
    fn fail_static_ignores_health_for_every_cell() {
        let map = probed(0.5);
        let (a, b, c, d) = (id(&map, "a"), id(&map, "b"), id(&map, "c"), id(&map, "d"));
        // 5 cells serve (a..e). Two unhealthy: 2 of 5 <= 0.5: applied.
        let two = ["a:1", "a:2", "b:1", "b:2", "d:1"];
        let v = View::new(map.clone(), &down(&map, &two), 1);
        assert!(!v.fail_static());
        assert_eq!(v.state(a).source, StatusSource::Health);
        assert_eq!(v.state(b).source, StatusSource::Health);
        assert_eq!(v.serving(a), c);
        assert_eq!(v.state(d).ipv4.len(), 1);
        // Three unhealthy: 3 of 5 > 0.5: health is ignored everywhere,
        // the endpoint filter of d included.
        let three = ["a:1", "a:2", "b:1", "b:2", "c:1", "c:2", "d:1"];
        let v = View::new(map.clone(), &down(&map, &three), 2);
        assert!(v.fail_static());
        assert_eq!((v.health().serving, v.health().unhealthy), (5, 3));
        for id in [a, b, c] {
            assert_eq!(
                (v.state(id).status, v.state(id).source),
                (Status::Active, StatusSource::Map)
            );
        }
        assert_eq!(v.state(d).ipv4.len(), 2);
        assert_eq!(v.serving(a), a);
        // Same answers as the map alone, but not the same view.
        let plain = View::of_map(map.clone());
        assert_eq!(v.states(), plain.states());
        assert!(!v.same_answers(&plain));
    }

    #[test]
    fn fail_static_counts_the_cells_serving_after_overrides() {
        let map = probed(0.5);
        // Overrides take c and e out: 3 serve (a, b, d); two unhealthy
        // (a, b) is more than half of them.
        let mut cond = down(&map, &["a:1", "a:2", "b:1", "b:2"]);
        cond.overrides.insert("c".into(), Status::Down);
        cond.overrides.insert("e".into(), Status::Down);
        let v = View::new(map.clone(), &cond, 1);
        assert_eq!((v.health().serving, v.health().unhealthy), (3, 2));
        assert!(v.fail_static());
        // Without the overrides, 2 of 5: applied.
        cond.overrides.clear();
        assert!(!View::new(map.clone(), &cond, 2).fail_static());
        // A limit of 0: health may take out no cell at all.
        let strict = probed(0.0);
        let v = View::new(strict.clone(), &down(&strict, &["a:1", "a:2"]), 3);
        assert!(v.fail_static());
        assert_eq!(v.state(id(&strict, "a")).status, Status::Active);
    }
}
