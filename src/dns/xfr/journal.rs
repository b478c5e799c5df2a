//! The IXFR journal (RFC 1995): the differences between recent zone
//! versions, so a secondary that has version N gets only what changed
//! since N instead of the whole zone.
//!
//! # What is recorded
//!
//! Every publish of the store (a map reload, an override, a health
//! verdict: each makes a zone version) records one [`Delta`]: the records
//! of the zone as a transfer carries them ([`super::stream`]: apex NS,
//! glue, the in-zone cell hostnames, every listed tenant with the records
//! of the cell serving it now) that the old version had and the new one
//! lacks, and the reverse. The SOA is not part of a delta: the IXFR
//! sequence carries the SOA of each end. Records are kept as uncompressed
//! wire bytes (owner, type, class, TTL, RDATA), so a delta is exactly what
//! an AXFR of either version would differ by, byte for byte, and a
//! transfer copies them out without encoding anything.
//!
//! # Off the query path
//!
//! A delta is computed by the publisher (the reload thread, or whoever
//! changes the conditions), under the store's write lock, before the new
//! version is swapped in: by the time a NOTIFY brings a secondary, its
//! delta is there. Readers (transfers) load the journal lock-free
//! (`arc-swap`). A change of effective status costs a scan of the tenants
//! of the cells whose answers changed; a new map costs two hash lookups
//! per tenant. A delta larger than the byte budget is abandoned as soon as
//! it exceeds it (bounded memory and time), and the journal is emptied:
//! every secondary then gets the whole zone once.
//!
//! # Bounds
//!
//! At most [`Limits::versions`] deltas and [`Limits::bytes`] bytes (the
//! record bytes plus a per-record overhead); the oldest go first. A
//! secondary whose serial is no longer in the journal (or never was) gets
//! the whole zone (RFC 1995 §4).
//!
//! # Condensing
//!
//! A secondary several versions behind gets one difference sequence from
//! its serial to ours ([`condense`]): a record removed then added again
//! (or added then removed) cancels out, so the secondary applies what
//! changed overall, once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable as _, BinEncoder, NameEncoding};

use crate::dns::prepared::{CellRecords, Live};
use crate::dns::wire;
use crate::map::CellId;

/// Bookkeeping bytes counted per record on top of its wire bytes (the
/// boxed slice and the vector slot holding it).
const RECORD_OVERHEAD: usize = 32;

/// Default of `--ixfr-journal-versions`.
pub const DEFAULT_VERSIONS: usize = 100;
/// Default of `--ixfr-journal-bytes`: 64 MiB.
pub const DEFAULT_BYTES: usize = 64 << 20;

/// How much the journal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deltas kept (0: no journal, every IXFR gets the whole zone).
    pub versions: usize,
    /// Bytes kept, all deltas together; also the largest single delta.
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            versions: DEFAULT_VERSIONS,
            bytes: DEFAULT_BYTES,
        }
    }
}

/// One record: owner name, type, class, TTL, RDLENGTH and RDATA, names
/// uncompressed.
pub(super) type Rr = Box<[u8]>;

/// The difference between two consecutive zone versions.
#[derive(Debug)]
pub(super) struct Delta {
    /// The SOA of the version it starts from.
    pub(super) from_soa: Record,
    /// The SOA of the version it leads to.
    pub(super) to_soa: Record,
    pub(super) from: u32,
    pub(super) to: u32,
    /// Records of `from` that `to` lacks.
    pub(super) removed: Vec<Rr>,
    /// Records of `to` that `from` lacks.
    pub(super) added: Vec<Rr>,
    /// Bytes counted against the budget.
    pub(super) bytes: usize,
}

/// What an IXFR from a serial gets.
#[derive(Debug)]
pub(super) enum Lookup {
    /// The deltas from the client's serial to ours, oldest first.
    Deltas(Vec<Arc<Delta>>),
    /// The journal does not reach back to that serial: the whole zone.
    Full,
}

/// The journal; see the module docs.
#[derive(Debug)]
pub struct Journal {
    limits: Limits,
    deltas: ArcSwap<Vec<Arc<Delta>>>,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Journal {
    /// An empty journal bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            deltas: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Its bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Records the difference between `old` and `new` (the publisher calls
    /// this, with its lock held, before `new` is served). A difference over
    /// the byte budget, or between different zones, empties the journal.
    pub fn record(&self, old: &Live, new: &Live) {
        if self.limits.versions == 0 {
            return;
        }
        let started = Instant::now();
        let delta = diff(old, new, self.limits.bytes);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut list: Vec<Arc<Delta>> = self.deltas.load().as_ref().clone();
        match delta {
            Some(d) => {
                tracing::debug!(
                    from = d.from,
                    to = d.to,
                    removed = d.removed.len(),
                    added = d.added.len(),
                    bytes = d.bytes,
                    ms,
                    "IXFR journal: delta recorded"
                );
                if list.last().is_some_and(|l| l.to != d.from) {
                    list.clear();
                }
                list.push(Arc::new(d));
                let mut total: usize = list.iter().map(|d| d.bytes).sum();
                let mut drop = 0;
                while list.len() - drop > self.limits.versions
                    || (total > self.limits.bytes && list.len() - drop > 1)
                {
                    total -= list[drop].bytes;
                    drop += 1;
                }
                list.drain(..drop);
            }
            None => {
                tracing::info!(
                    from = old.view.serial(),
                    to = new.view.serial(),
                    budget = self.limits.bytes,
                    ms,
                    "IXFR journal emptied: the change is larger than --ixfr-journal-bytes \
                     (or changes the zone's origin); secondaries transfer the whole zone once"
                );
                list.clear();
            }
        }
        crate::metrics::ixfr_journal(list.len(), list.iter().map(|d| d.bytes).sum());
        self.deltas.store(Arc::new(list));
    }

    /// The deltas leading from serial `from` to serial `to`.
    pub(super) fn lookup(&self, from: u32, to: u32) -> Lookup {
        let list = self.deltas.load();
        let Some(start) = list.iter().position(|d| d.from == from) else {
            return Lookup::Full;
        };
        let mut chain = Vec::new();
        for d in &list[start..] {
            chain.push(d.clone());
            if d.to == to {
                return Lookup::Deltas(chain);
            }
        }
        Lookup::Full
    }

    /// Deltas held and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        let list = self.deltas.load();
        (list.len(), list.iter().map(|d| d.bytes).sum())
    }
}

/// One difference sequence equivalent to applying `chain` in order: the
/// records removed overall and those added overall, each once, in the
/// order they first appear. (Valid chains alternate presence: a record is
/// never removed twice without being added in between.)
pub(super) fn condense(chain: &[Arc<Delta>]) -> (Vec<&[u8]>, Vec<&[u8]>) {
    if let [one] = chain {
        return (
            one.removed.iter().map(|r| &r[..]).collect(),
            one.added.iter().map(|r| &r[..]).collect(),
        );
    }
    // Net presence change per record, and the order first seen.
    let mut net: HashMap<&[u8], i32> = HashMap::new();
    let mut order: Vec<&[u8]> = Vec::new();
    for d in chain {
        for r in &d.removed {
            let e = net.entry(&r[..]).or_insert_with(|| {
                order.push(&r[..]);
                0
            });
            *e -= 1;
        }
        for r in &d.added {
            let e = net.entry(&r[..]).or_insert_with(|| {
                order.push(&r[..]);
                0
            });
            *e += 1;
        }
    }
    let removed = order.iter().copied().filter(|r| net[r] < 0).collect();
    let added = order.iter().copied().filter(|r| net[r] > 0).collect();
    (removed, added)
}

/// Appends `name`, type, class IN, `ttl` and `rdata`, uncompressed.
fn encode(buf: &mut Vec<u8>, name: &Name, ttl: u32, rdata: &RData) {
    wire::put_name(buf, name);
    encode_tail(buf, ttl, rdata);
}

/// Appends type, class IN, `ttl` and `rdata` (a record after its owner).
fn encode_tail(buf: &mut Vec<u8>, ttl: u32, rdata: &RData) {
    let at = wire::begin_record(buf, u16::from(rdata.record_type()), wire::CLASS_IN, ttl);
    match rdata {
        RData::A(a) => buf.extend_from_slice(&a.0.octets()),
        RData::AAAA(a) => buf.extend_from_slice(&a.0.octets()),
        RData::CNAME(n) => wire::put_name(buf, &n.0),
        RData::NS(n) => wire::put_name(buf, &n.0),
        other => {
            let mut tmp = Vec::new();
            let mut enc = BinEncoder::new(&mut tmp);
            let mut enc = enc.with_name_encoding(NameEncoding::Uncompressed);
            if other.emit(&mut enc).is_ok() {
                drop(enc);
                buf.extend_from_slice(&tmp);
            }
        }
    }
    wire::end_record(buf, at);
}

/// The records of a version other than the SOA and the tenants (apex NS,
/// glue, in-zone cell hostnames), encoded.
fn fixed_records(live: &Live) -> Vec<Vec<u8>> {
    let a = &live.answers;
    let mut out = Vec::new();
    let cells = a
        .cells
        .iter()
        .flat_map(|c| c.host_a.iter().chain(&c.host_aaaa));
    for r in a.ns.iter().chain(&a.glue).chain(cells) {
        let mut buf = Vec::new();
        encode(&mut buf, &r.name, r.ttl, &r.data);
        out.push(buf);
    }
    out
}

/// Per cell, what follows a tenant's owner name for each of its records
/// when that cell serves it, with `ttl`, as the transfer writes them (the
/// CNAME alone, else A then AAAA).
fn tails(live: &Live, ttl: u32) -> Vec<Vec<Vec<u8>>> {
    live.answers
        .cells
        .iter()
        .map(|c: &CellRecords| {
            let rdata: Vec<&RData> = match &c.cname {
                Some(cname) => vec![cname],
                None => c.a.iter().chain(&c.aaaa).collect(),
            };
            rdata
                .into_iter()
                .map(|rd| {
                    let mut buf = Vec::new();
                    encode_tail(&mut buf, ttl, rd);
                    buf
                })
                .collect()
        })
        .collect()
}

/// Per cell of `live`, the number of the tenant records of the cell
/// serving it: equal numbers, equal records (numbers kept in `ids`).
fn number_tails<'a>(
    ids: &mut HashMap<&'a [Vec<u8>], u32>,
    live: &Live,
    tails: &'a [Vec<Vec<u8>>],
) -> Vec<u32> {
    live.view
        .map()
        .cell_ids()
        .map(|id| {
            let next = ids.len() as u32;
            *ids.entry(&tails[usize::from(live.view.serving(id).0)][..])
                .or_insert(next)
        })
        .collect()
}

/// The records `live` serves the listed tenant `label` (lowercased), as a
/// transfer writes them: from `tails`, or from `short` (the same with
/// `zone.move_ttl`) while a planned move shortens its TTL. `None` when the
/// map does not list it.
fn served<'t>(
    live: &Live,
    tails: &'t [Vec<Vec<u8>>],
    short: &'t [Vec<Vec<u8>>],
    label: &str,
) -> Option<&'t [Vec<u8>]> {
    // Listed tenants only: a hashed one is not in the zone's records.
    live.view.map().tenants.get(label.as_bytes())?;
    // As a query is answered.
    let target = crate::route::lookup_target(&live.view, label.as_bytes())?;
    let i = usize::from(target.cell.0);
    Some(if target.short_ttl {
        &short[i]
    } else {
        &tails[i]
    })
}

/// Collects records against a byte budget.
struct Builder {
    removed: Vec<Rr>,
    added: Vec<Rr>,
    bytes: usize,
    budget: usize,
    owner: Vec<u8>,
    origin: Vec<u8>,
}

impl Builder {
    /// Adds `rr` to `removed` or `added`; false once over the budget.
    fn push(&mut self, added: bool, rr: &[u8]) -> bool {
        self.bytes += rr.len() + RECORD_OVERHEAD;
        let list = if added {
            &mut self.added
        } else {
            &mut self.removed
        };
        list.push(rr.into());
        self.bytes <= self.budget
    }

    /// Adds a tenant's records (its owner `label`, then each tail).
    fn tenant(&mut self, added: bool, label: &str, tails: &[Vec<u8>]) -> bool {
        self.tenant_some(added, label, tails.iter())
    }

    /// A tenant whose serving records went from `was` to `is`: the
    /// records only one of them has.
    fn tenant_change(&mut self, label: &str, was: &[Vec<u8>], is: &[Vec<u8>]) -> bool {
        self.tenant_some(false, label, was.iter().filter(|t| !is.contains(t)))
            && self.tenant_some(true, label, is.iter().filter(|t| !was.contains(t)))
    }

    fn tenant_some<'t>(
        &mut self,
        added: bool,
        label: &str,
        tails: impl Iterator<Item = &'t Vec<u8>>,
    ) -> bool {
        self.owner.clear();
        wire::put_label(&mut self.owner, label.as_bytes());
        self.owner.extend_from_slice(&self.origin);
        let at = self.owner.len();
        for t in tails {
            self.owner.truncate(at);
            self.owner.extend_from_slice(t);
            let rr = std::mem::take(&mut self.owner);
            let ok = self.push(added, &rr);
            self.owner = rr;
            if !ok {
                return false;
            }
        }
        true
    }
}

/// The delta from `old` to `new`, or `None` when it is over `budget`
/// bytes or the zones differ (another origin).
pub(super) fn diff(old: &Live, new: &Live, budget: usize) -> Option<Delta> {
    let (om, nm) = (old.view.map(), new.view.map());
    if om.zone.origin != nm.zone.origin {
        return None;
    }
    let mut origin = Vec::new();
    wire::put_name(&mut origin, &nm.zone.origin);
    let mut b = Builder {
        removed: Vec::new(),
        added: Vec::new(),
        bytes: 0,
        budget,
        owner: Vec::new(),
        origin,
    };
    // Apex and cell hostnames: few records, compared as sets.
    let (of, nf) = (fixed_records(old), fixed_records(new));
    {
        let was: std::collections::HashSet<&[u8]> = of.iter().map(Vec::as_slice).collect();
        let is: std::collections::HashSet<&[u8]> = nf.iter().map(Vec::as_slice).collect();
        for r in &of {
            if !is.contains(r.as_slice()) && !b.push(false, r) {
                return None;
            }
        }
        for r in &nf {
            if !was.contains(r.as_slice()) && !b.push(true, r) {
                return None;
            }
        }
    }
    // Tenants. Each cell's tenant records are numbered by content, across
    // both versions, so comparing what a tenant had with what it has is
    // comparing two numbers.
    let (ot, nt) = (tails(old, om.zone.ttl), tails(new, nm.zone.ttl));
    // Tenants a planned move affects in either version (few) are compared
    // apart, by what each version serves them (the cell assigned now, the
    // short TTL): the per-cell numbering below does not see them.
    let moved: HashSet<&str> = old
        .view
        .moves()
        .affected()
        .chain(new.view.moves().affected())
        .map(|(t, _, _)| t)
        .collect();
    let mut ids: HashMap<&[Vec<u8>], u32> = HashMap::new();
    let old_id = number_tails(&mut ids, old, &ot);
    let new_id = number_tails(&mut ids, new, &nt);
    let old_tails = |cell: CellId| &ot[usize::from(old.view.serving(cell).0)];
    let new_tails = |cell: CellId| &nt[usize::from(new.view.serving(cell).0)];
    if Arc::ptr_eq(old.view.map_arc(), new.view.map_arc()) {
        // Same tenants, same assignments: only the cells whose serving
        // records changed matter.
        let changed: Vec<bool> = nm
            .cell_ids()
            .map(|id| old_id[usize::from(id.0)] != new_id[usize::from(id.0)])
            .collect();
        if changed.iter().any(|&c| c) {
            for (tenant, cell) in nm.tenants.iter() {
                if changed[usize::from(cell.0)]
                    && !moved.contains(tenant)
                    && !b.tenant_change(tenant, old_tails(cell), new_tails(cell))
                {
                    return None;
                }
            }
        }
    } else {
        // Maps are usually rewritten in the same order: walk the old one
        // alongside, and look a name up (cache misses, at a million
        // tenants) only where the two do not line up.
        let mut matched = 0usize;
        let mut old_in_order = om.tenants.iter();
        for (tenant, now) in nm.tenants.iter() {
            let was = match old_in_order.next() {
                Some((name, cell)) if name == tenant => Some(cell),
                _ => om.tenants.get(tenant.as_bytes()),
            };
            if moved.contains(tenant) {
                matched += usize::from(was.is_some());
                continue;
            }
            match was {
                None => {
                    if !b.tenant(true, tenant, new_tails(now)) {
                        return None;
                    }
                }
                Some(was) => {
                    matched += 1;
                    if old_id[usize::from(was.0)] != new_id[usize::from(now.0)]
                        && !b.tenant_change(tenant, old_tails(was), new_tails(now))
                    {
                        return None;
                    }
                }
            }
        }
        if matched < om.tenants.len() {
            for (tenant, cell) in om.tenants.iter() {
                if nm.tenants.get(tenant.as_bytes()).is_none()
                    && !moved.contains(tenant)
                    && !b.tenant(false, tenant, old_tails(cell))
                {
                    return None;
                }
            }
        }
    }
    if !moved.is_empty() {
        let (os, ns) = (tails(old, om.zone.move_ttl), tails(new, nm.zone.move_ttl));
        for tenant in &moved {
            let was = served(old, &ot, &os, tenant).unwrap_or(&[]);
            let is = served(new, &nt, &ns, tenant).unwrap_or(&[]);
            if was != is && !b.tenant_change(tenant, was, is) {
                return None;
            }
        }
    }
    Some(Delta {
        from_soa: old.answers.soa.clone(),
        to_soa: new.answers.soa.clone(),
        from: old.view.serial(),
        to: new.view.serial(),
        removed: b.removed,
        added: b.added,
        bytes: b.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::prepared::Answers;
    use crate::live::{Conditions, View};
    use crate::map::generate::{Spec, generate_spec, tenant_name};
    use crate::map::{Format, Snapshot, Source, Status, load_str};

    fn map(tenants: usize, cells: usize, move_every: usize) -> Arc<Snapshot> {
        let mut spec = Spec::new(tenants, cells, Format::Json);
        spec.move_every = move_every;
        let text = generate_spec(&spec);
        Arc::new(
            load_str(Source {
                text: &text,
                format: Format::Json,
                name: "gen.json",
            })
            .expect("generated map"),
        )
    }

    fn live(map: &Arc<Snapshot>, down: &[&str], serial: u32) -> Live {
        let mut c = Conditions::default();
        for cell in down {
            c.overrides.insert((*cell).into(), Status::Down);
        }
        let view = View::new(map.clone(), &c, serial);
        let answers = Answers::prepare(&view, None);
        Live {
            view: Arc::new(view),
            answers,
        }
    }

    fn texts(rrs: &[&[u8]]) -> Vec<String> {
        rrs.iter()
            .map(|r| {
                let mut d = hickory_proto::serialize::binary::BinDecoder::new(r);
                let rec = <Record as hickory_proto::serialize::binary::BinDecodable>::read(&mut d)
                    .expect("record");
                format!(
                    "{} {} {} {}",
                    rec.name,
                    rec.ttl,
                    rec.record_type(),
                    rec.data
                )
            })
            .collect()
    }

    #[test]
    fn a_moved_tenant_is_its_old_records_out_and_new_ones_in() {
        let a = map(100, 4, 0);
        // Tenants 10, 20, ... move to the next cell.
        let b = map(100, 4, 10);
        let d = diff(&live(&a, &[], 1), &live(&b, &[], 2), usize::MAX).expect("delta");
        assert_eq!((d.from, d.to), (1, 2));
        // 10 tenants, each 2 A + 1 AAAA out and in (cells never share
        // addresses).
        assert_eq!(d.removed.len(), 30);
        assert_eq!(d.added.len(), 30);
        let removed = texts(&d.removed.iter().map(|r| &r[..]).collect::<Vec<_>>());
        assert!(
            removed
                .iter()
                .any(|r| r.starts_with(&format!("{}.cells.example.test. 30 A ", tenant_name(10)))),
            "{removed:?}"
        );
        // Nothing changed: an empty delta.
        let same = diff(&live(&a, &[], 1), &live(&a, &[], 2), usize::MAX).expect("delta");
        assert!(same.removed.is_empty() && same.added.is_empty());
    }

    #[test]
    fn a_planned_move_is_its_short_ttl_then_its_flip_then_the_normal_ttl() {
        use std::time::{Duration, SystemTime};
        let mut spec = Spec::new(40, 4, Format::Toml);
        spec.move_every = 0;
        let text = generate_spec(&spec);
        let line = text
            .lines()
            .find(|l| l.starts_with("t000010 = "))
            .expect("t000010 listed");
        let to = if line.contains("c0002") {
            "c0003"
        } else {
            "c0002"
        };
        // 2030-01-01T00:00:00Z; zone ttl 30, move_ttl 5 (the default).
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        let text =
            format!("{text}\n[moves.t000010]\nto = \"{to}\"\nat = \"2030-01-01T00:00:00Z\"\n");
        let m = Arc::new(
            load_str(Source {
                text: &text,
                format: Format::Toml,
                name: "gen.toml",
            })
            .expect("map with a move"),
        );
        let at_time = |secs: i64, serial| {
            let now = if secs < 0 {
                at - Duration::from_secs(secs.unsigned_abs())
            } else {
                at + Duration::from_secs(secs.unsigned_abs())
            };
            let view = View::new_at(m.clone(), &Conditions::default(), serial, now);
            let answers = Answers::prepare(&view, None);
            Live {
                view: Arc::new(view),
                answers,
            }
        };
        // Scheduled, the short-TTL window, moved (still short), done.
        let versions = [
            at_time(-100, 1),
            at_time(-10, 2),
            at_time(10, 3),
            at_time(100, 4),
        ];
        let owner = "t000010.cells.example.test.";
        let expect = [(30, 5, false), (5, 5, true), (5, 30, false)];
        for (pair, (ttl_was, ttl_is, flips)) in versions.windows(2).zip(expect) {
            let d = diff(&pair[0], &pair[1], usize::MAX).expect("delta");
            let removed = texts(&d.removed.iter().map(|r| &r[..]).collect::<Vec<_>>());
            let added = texts(&d.added.iter().map(|r| &r[..]).collect::<Vec<_>>());
            // The tenant's 2 A + 1 AAAA out and in, nothing else.
            assert_eq!(
                (removed.len(), added.len()),
                (3, 3),
                "{removed:?} {added:?}"
            );
            for r in &removed {
                assert!(r.starts_with(&format!("{owner} {ttl_was} ")), "{r}");
            }
            for r in &added {
                assert!(r.starts_with(&format!("{owner} {ttl_is} ")), "{r}");
            }
            let same_addresses = removed.iter().all(|r| {
                let rdata = r.rsplit(' ').next().unwrap_or_default();
                added.iter().any(|a| a.ends_with(&format!(" {rdata}")))
            });
            assert_eq!(same_addresses, !flips, "{removed:?} {added:?}");
        }
        // Condensed from before the window to after it: the flip alone.
        let d = diff(&versions[0], &versions[3], usize::MAX).expect("delta");
        assert_eq!((d.removed.len(), d.added.len()), (3, 3));
    }

    #[test]
    fn tenants_out_of_line_are_looked_up() {
        let spec = Spec::new(50, 4, Format::Json);
        let text = generate_spec(&spec);
        // t000005 removed (every later tenant shifts one place), t000040
        // moved, a new tenant at the end.
        let edited = text
            .replacen(",\n    \"t000005\": \"c0001\"", "", 1)
            .replacen("\"t000040\": \"c0004\"", "\"t000040\": \"c0001\"", 1)
            .replacen("\n  }\n}", ",\n    \"newco\": \"c0002\"\n  }\n}", 1);
        let load = |t: &str| {
            Arc::new(
                load_str(Source {
                    text: t,
                    format: Format::Json,
                    name: "gen.json",
                })
                .expect("map"),
            )
        };
        let (a, b) = (load(&text), load(&edited));
        assert_eq!(b.tenants.len(), 50, "the edits did not apply");
        let d = diff(&live(&a, &[], 1), &live(&b, &[], 2), usize::MAX).expect("delta");
        let owners = |rrs: &[Rr]| {
            let mut o: Vec<String> = texts(&rrs.iter().map(|r| &r[..]).collect::<Vec<_>>())
                .iter()
                .map(|t| t.split(' ').next().unwrap_or_default().to_owned())
                .collect();
            o.sort();
            o.dedup();
            o
        };
        assert_eq!(
            owners(&d.removed),
            ["t000005.cells.example.test.", "t000040.cells.example.test."]
        );
        assert_eq!(
            owners(&d.added),
            ["newco.cells.example.test.", "t000040.cells.example.test."]
        );
        assert_eq!((d.removed.len(), d.added.len()), (6, 6));
    }

    #[test]
    fn a_cell_going_down_moves_its_tenants_to_the_failover() {
        let a = map(40, 4, 0);
        let before = live(&a, &[], 1);
        let after = live(&a, &["c0001"], 2);
        let d = diff(&before, &after, usize::MAX).expect("delta");
        let served_elsewhere = a
            .tenants
            .iter()
            .filter(|(_, c)| before.view.serving(*c) != after.view.serving(*c))
            .count();
        assert!(served_elsewhere > 0);
        assert_eq!(d.removed.len(), served_elsewhere * 3);
        assert_eq!(d.added.len(), served_elsewhere * 3);
    }

    #[test]
    fn a_delta_over_the_budget_empties_the_journal() {
        let a = map(1000, 2, 0);
        let b = map(1000, 2, 2);
        assert!(diff(&live(&a, &[], 1), &live(&b, &[], 2), 10_000).is_none());
        let j = Journal::new(Limits {
            versions: 10,
            bytes: 10_000,
        });
        j.record(&live(&a, &[], 1), &live(&a, &["c0001"], 2));
        // (c0001 down with no failover in a generated map may or may not
        // change answers; what matters is the next one.)
        j.record(&live(&a, &["c0001"], 2), &live(&b, &[], 3));
        assert_eq!(j.usage().0, 0);
        assert!(matches!(j.lookup(2, 3), Lookup::Full));
    }

    #[test]
    fn bounds_evict_the_oldest_versions() {
        let maps: Vec<Arc<Snapshot>> = (0..6).map(|i| map(100, 4, 10 + i)).collect();
        let lives: Vec<Live> = maps
            .iter()
            .enumerate()
            .map(|(i, m)| live(m, &[], 100 + i as u32))
            .collect();
        let j = Journal::new(Limits {
            versions: 3,
            bytes: usize::MAX,
        });
        for w in lives.windows(2) {
            j.record(&w[0], &w[1]);
        }
        assert_eq!(j.usage().0, 3);
        assert!(matches!(j.lookup(100, 105), Lookup::Full));
        assert!(matches!(j.lookup(101, 105), Lookup::Full));
        assert!(matches!(j.lookup(102, 105), Lookup::Deltas(c) if c.len() == 3));
        assert!(matches!(j.lookup(104, 105), Lookup::Deltas(c) if c.len() == 1));
        // Unknown or newer serials.
        assert!(matches!(j.lookup(7, 105), Lookup::Full));
        assert!(matches!(j.lookup(106, 105), Lookup::Full));
        // A byte budget that holds about two deltas.
        let one = j.deltas.load()[0].bytes;
        let j = Journal::new(Limits {
            versions: 100,
            bytes: one * 2 + one / 2,
        });
        for w in lives.windows(2) {
            j.record(&w[0], &w[1]);
        }
        let (n, bytes) = j.usage();
        assert!(
            n == 2 && bytes <= one * 2 + one / 2,
            "{n} deltas, {bytes} bytes"
        );
        // A version that does not follow the last one restarts the chain.
        j.record(&lives[0], &lives[1]);
        assert_eq!(j.usage().0, 1);
        // No journal at all.
        let off = Journal::new(Limits {
            versions: 0,
            bytes: 1 << 20,
        });
        off.record(&lives[0], &lives[1]);
        assert!(matches!(off.lookup(100, 101), Lookup::Full));
    }

    #[test]
    fn condensing_several_versions_is_the_direct_difference() {
        // 1: as generated; 2: cell c0002 down; 3: tenants moved; 4: c0002
        // up again (with the moves); 5: back to the first map.
        let a = map(60, 3, 0);
        let b = map(60, 3, 7);
        let v = [
            live(&a, &[], 1),
            live(&a, &["c0002"], 2),
            live(&b, &["c0002"], 3),
            live(&b, &[], 4),
            live(&a, &[], 5),
        ];
        let j = Journal::default();
        for w in v.windows(2) {
            j.record(&w[0], &w[1]);
        }
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        for (from, to) in [(0, 3), (1, 3), (0, 2)] {
            let Lookup::Deltas(chain) = j.lookup(v[from].view.serial(), v[to].view.serial()) else {
                panic!("{from}..{to} not in the journal");
            };
            let (removed, added) = condense(&chain);
            let direct = diff(&v[from], &v[to], usize::MAX).expect("delta");
            assert_eq!(
                sorted(texts(&removed)),
                sorted(texts(
                    &direct.removed.iter().map(|r| &r[..]).collect::<Vec<_>>()
                )),
                "{from}..{to} removed"
            );
            assert_eq!(
                sorted(texts(&added)),
                sorted(texts(
                    &direct.added.iter().map(|r| &r[..]).collect::<Vec<_>>()
                )),
                "{from}..{to} added"
            );
        }
        // There and back again: nothing overall.
        let Lookup::Deltas(chain) = j.lookup(1, 5) else {
            panic!("1..5 not in the journal");
        };
        let (removed, added) = condense(&chain);
        assert!(removed.is_empty() && added.is_empty());
    }
}
