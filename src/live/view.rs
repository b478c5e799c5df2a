//! The effective view: a map snapshot combined with what changes a cell's
//! status between map versions, as one immutable value.
//!
//! A cell's **effective status** decides every answer and every token:
//! an operator override (if any) beats health, which beats the map's
//! `status`; health can take a serving cell out but never bring a `down`
//! cell back. From the effective statuses follow the cell that serves
//! each cell's tenants (failover chains, [`crate::map::failover`]) and the
//! pool unlisted tenants are hashed over.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::map::failover::{self, Chain};
use crate::map::{Cell, CellId, Snapshot, Status};

/// Why a cell has its effective status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusSource {
    /// The map's `status`.
    Map,
    /// An operator override.
    Override,
}

impl StatusSource {
    /// The word used in the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::Override => "override",
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
    /// IPv4 endpoints answered for it.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 endpoints answered for it.
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
}

impl View {
    /// Combines `map` with `conditions`; `serial` is the SOA serial of this
    /// zone version. Conditions naming cells the map does not have are
    /// ignored (they may apply again to a later map).
    pub fn new(map: Arc<Snapshot>, conditions: &Conditions, serial: u32) -> Self {
        let effective: Vec<(Status, StatusSource)> = map
            .cells
            .iter()
            .map(|c| match conditions.overrides.get(&c.id) {
                Some(&s) => (s, StatusSource::Override),
                None => (c.status, StatusSource::Map),
            })
            .collect();
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
                CellState {
                    status,
                    source,
                    serving,
                    failover_path,
                    stranded,
                    ipv4: cell.ipv4.clone(),
                    ipv6: cell.ipv6.clone(),
                }
            })
            .collect::<Vec<_>>();
        let hash_pool = map
            .cell_ids()
            .filter(|&id| {
                cells[usize::from(id.0)].status == Status::Active && map.cell(id).weight > 0
            })
            .collect();
        Self {
            map,
            serial,
            cells,
            hash_pool,
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

    /// Whether `other` answers every query exactly as this view does,
    /// serial aside: same map, same effective cells.
    pub fn same_answers(&self, other: &View) -> bool {
        Arc::ptr_eq(&self.map, &other.map) && self.cells == other.cells
    }
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
}
