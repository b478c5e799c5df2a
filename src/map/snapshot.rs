//! The compiled, validated, immutable form of a map: pure data.
//!
//! A `Snapshot` is built once per map version (by [`super::compile`]) and
//! then only read, through an `Arc`. It holds what the map file says (cells,
//! tenants, zone parameters), indexed for lookups, and nothing derived for a
//! protocol: no DNS records or wire bytes, no metric handles, no serial.
//! The `live` part combines it with what changes between map versions (operator
//! overrides, health, scheduled moves) into the effective view that DNS and
//! tokens read; `check`, `diff` and `explain` use it alone.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use hickory_proto::rr::{LowerName, Name};

use super::index::TenantIndex;

/// Index of a cell in [`Snapshot::cells`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellId(pub u16);

/// A cell's operational status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Serves its tenants and takes new (hashed) ones.
    Active,
    /// Serves its tenants, takes no new ones.
    Draining,
    /// Serves nothing; its tenants go to its failover cell.
    Down,
}

impl Status {
    /// The word used in map files, metrics and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }

    /// All statuses, in display order.
    pub const ALL: [Status; 3] = [Status::Active, Status::Draining, Status::Down];

    /// The status a word names (`active`, `draining`, `down`).
    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == word)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How tenants that are not listed are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// They do not exist: NXDOMAIN, no token.
    Nxdomain,
    /// Weighted rendezvous hashing over active cells.
    Hash,
}

impl Placement {
    /// The word used in map files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nxdomain => "nxdomain",
            Self::Hash => "hash",
        }
    }
}

/// How an endpoint is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Probe {
    /// An HTTP/1.1 `GET` of a path; a 2xx status is up.
    Http,
    /// A TCP connection; established is up.
    Tcp,
}

impl Probe {
    /// The word used in map files, metrics and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

/// A cell's health probing, as the map configures it (`[cells.<id>.health]`):
/// pure data; the `health` part runs the probers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// HTTP or TCP.
    pub probe: Probe,
    /// The port probed on every address of the cell.
    pub port: u16,
    /// The path of an HTTP probe (`/` for TCP, unused).
    pub path: String,
    /// Time between two probes of one endpoint.
    pub interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
    /// Consecutive successes before a down endpoint is up.
    pub rise: u32,
    /// Consecutive failures before an endpoint is down.
    pub fall: u32,
    /// Fewer endpoints up than this: the cell is unhealthy.
    pub min_up: u32,
}

/// One cell, as the map describes it.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The cell id (the map's table key).
    pub id: String,
    /// The cell's DNS name; the `cell` claim of tokens.
    pub hostname: Name,
    /// Whether `hostname` is inside the zone (then cellns answers for it).
    pub hostname_in_zone: bool,
    /// IPv4 endpoints.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 endpoints.
    pub ipv6: Vec<Ipv6Addr>,
    /// Region label.
    pub region: String,
    /// Status.
    pub status: Status,
    /// Hashing weight.
    pub weight: u32,
    /// The configured failover cell.
    pub failover: Option<CellId>,
    /// The cell that serves this cell's tenants by the map's statuses alone:
    /// itself unless it is down, else the end of its failover chain. (The
    /// effective view may differ: overrides and health change statuses.)
    pub serving: CellId,
    /// The down cells passed through to reach `serving`, starting with this
    /// one (empty unless this cell is down).
    pub failover_path: Vec<CellId>,
    /// Tenants listed in the map for this cell.
    pub listed_tenants: usize,
    /// Per-cell seed of the rendezvous hash.
    pub hash_seed: u64,
    /// Health probing of its endpoints, when the map asks for it.
    pub health: Option<HealthCheck>,
}

impl Cell {
    /// The cell's endpoint addresses, IPv4 first, in map order.
    pub fn endpoints(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.ipv6.iter().map(|a| IpAddr::V6(*a)))
    }

    /// Whether tenants reach this cell only by name: no addresses of its
    /// own and a hostname outside the zone (DNS answers with a CNAME).
    pub fn by_name_only(&self) -> bool {
        !self.hostname_in_zone && self.ipv4.is_empty() && self.ipv6.is_empty()
    }
}

/// The zone cellns is authoritative for, as the map configures it.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Zone apex, as written.
    pub origin: Name,
    /// Zone apex, lowercased, for comparisons.
    pub origin_lower: LowerName,
    /// TTL of tenant and cell answers.
    pub ttl: u32,
    /// TTL of a moving tenant's answers around its move (`zone.move_ttl`).
    pub move_ttl: u32,
    /// TTL of negative answers (and the SOA MINIMUM).
    pub negative_ttl: u32,
    /// TTL of SOA, NS and glue.
    pub apex_ttl: u32,
    /// SOA REFRESH.
    pub refresh: u32,
    /// SOA RETRY.
    pub retry: u32,
    /// SOA EXPIRE.
    pub expire: u32,
    /// The map's declared SOA serial (`zone.serial`), if any; the serial
    /// served is decided by the `live` part (its serial module).
    pub serial: Option<u32>,
    /// NS names.
    pub nameservers: Vec<Name>,
    /// SOA RNAME.
    pub hostmaster: Name,
    /// Glue addresses of in-zone nameservers.
    pub glue: Vec<(Name, Vec<IpAddr>)>,
}

/// What an in-zone name other than a tenant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticName {
    /// An in-zone nameserver (index into [`Zone::nameservers`]).
    Nameserver(usize),
    /// An in-zone cell hostname.
    Cell(CellId),
    /// An empty non-terminal: a name with nothing of its own but names below it.
    EmptyNonTerminal,
}

/// Reload safety gates, as the map configures them.
#[derive(Debug, Clone, PartialEq)]
pub struct Safety {
    /// Largest fraction of listed tenants a reload may move.
    pub max_moved_fraction: f64,
    /// Largest fraction of listed tenants a reload may remove.
    pub max_removed_fraction: f64,
    /// Override naming one change allowed past the gates.
    pub allow_mass_change: Option<String>,
    /// Largest fraction of serving cells health may take out at once.
    pub max_unhealthy_fraction: f64,
}

/// A planned tenant move (`[moves.<tenant>]`): pure data; the `live` part
/// turns it into answers at the right times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The tenant id, lowercased.
    pub tenant: String,
    /// Its `[tenants]` cell: where it is served until `at`.
    pub from: CellId,
    /// Where it is served from `at` on.
    pub to: CellId,
    /// When it moves (whole seconds).
    pub at: SystemTime,
}

/// An immutable, compiled map.
#[derive(Debug)]
pub struct Snapshot {
    /// The map's version (`version` field, or a content hash).
    pub version: String,
    /// Where the map came from (path or `embedded:...`).
    pub source: String,
    /// When it was compiled.
    pub loaded_at: SystemTime,
    /// Zone and apex records.
    pub zone: Zone,
    /// Cells; a [`CellId`] indexes this.
    pub cells: Vec<Cell>,
    /// Listed tenants.
    pub tenants: TenantIndex,
    /// Placement of unlisted tenants.
    pub placement: Placement,
    /// Reload gates.
    pub safety: Safety,
    /// In-zone names other than the apex and tenants (lowercased).
    pub static_names: HashMap<LowerName, StaticName>,
    /// Planned tenant moves, in file order; at most one per tenant.
    pub moves: Vec<Move>,
    /// Moving tenants → their position in `moves` (the cell is unused).
    pub moves_index: TenantIndex,
}

impl Snapshot {
    /// The cell `id` names.
    pub fn cell(&self, id: CellId) -> &Cell {
        &self.cells[id.0 as usize]
    }

    /// Looks a cell up by its map id.
    pub fn cell_by_id(&self, id: &str) -> Option<CellId> {
        self.cells
            .iter()
            .position(|c| c.id == id)
            .map(|i| CellId(i as u16))
    }

    /// The ids of all cells, in map order.
    pub fn cell_ids(&self) -> impl ExactSizeIterator<Item = CellId> + '_ {
        (0..self.cells.len()).map(|i| CellId(i as u16))
    }

    /// The planned move of `tenant` (compared case-insensitively), if any.
    pub fn move_of(&self, tenant: &str) -> Option<&Move> {
        let (i, _) = self.moves_index.find(tenant.as_bytes())?;
        self.moves.get(i)
    }

    /// Number of cells with `status`.
    pub fn cells_with_status(&self, status: Status) -> usize {
        self.cells.iter().filter(|c| c.status == status).count()
    }
}
