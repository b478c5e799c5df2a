//! What a query gets: the decision table of DESIGN.md ("What a query gets"),
//! as a pure function of a snapshot and a question. Transport concerns
//! (EDNS, truncation, opcodes, malformed input) live in [`super::handler`].

use std::borrow::Cow;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use crate::map::{CellId, Snapshot, StaticName};
use crate::route;

/// What kind of answer a query got, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A tenant's cell answered (addresses or CNAME).
    Tenant(CellId),
    /// A tenant exists but has no data of the asked type.
    TenantNodata(CellId),
    /// An unknown tenant (or other unknown name in the zone): NXDOMAIN.
    NxDomain,
    /// An apex, nameserver or cell-hostname answer, or NODATA for one.
    Zone,
    /// Not our zone, or not class IN.
    Refused,
}

/// The sections of an authoritative answer.
#[derive(Debug, Clone)]
pub struct Answer<'s> {
    /// NOERROR, NXDOMAIN or REFUSED.
    pub rcode: ResponseCode,
    /// AA flag: set for everything inside the zone.
    pub authoritative: bool,
    /// Answer section.
    pub answers: Cow<'s, [Record]>,
    /// Authority section (the SOA of negative answers).
    pub authority: Cow<'s, [Record]>,
    /// Additional section (glue for NS answers).
    pub additional: Cow<'s, [Record]>,
    /// What happened, for metrics.
    pub outcome: Outcome,
}

impl<'s> Answer<'s> {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: Cow::Borrowed(&[]),
            authority: Cow::Borrowed(&[]),
            additional: Cow::Borrowed(&[]),
            outcome: Outcome::Refused,
        }
    }

    fn positive(answers: Cow<'s, [Record]>, outcome: Outcome) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: Cow::Borrowed(&[]),
            additional: Cow::Borrowed(&[]),
            outcome,
        }
    }

    fn negative(snap: &'s Snapshot, rcode: ResponseCode, outcome: Outcome) -> Self {
        Self {
            rcode,
            authoritative: true,
            answers: Cow::Borrowed(&[]),
            authority: Cow::Borrowed(std::slice::from_ref(&snap.zone.negative_soa)),
            additional: Cow::Borrowed(&[]),
            outcome,
        }
    }
}

/// Answers one question. `qname` is the question's name as sent (its case
/// is kept in owner names); `lower` the same name lowercased.
pub fn answer<'s>(
    snap: &'s Snapshot,
    qname: &Name,
    lower: &LowerName,
    qtype: RecordType,
    qclass: DNSClass,
) -> Answer<'s> {
    let zone = &snap.zone;
    if qclass != DNSClass::IN && qclass != DNSClass::ANY || !zone.origin_lower.zone_of(lower) {
        return Answer::refused();
    }
    let nodata = || Answer::negative(snap, ResponseCode::NoError, Outcome::Zone);

    if *lower == zone.origin_lower {
        return match qtype {
            RecordType::SOA | RecordType::ANY => Answer::positive(
                Cow::Borrowed(std::slice::from_ref(&zone.soa)),
                Outcome::Zone,
            ),
            RecordType::NS => Answer {
                additional: Cow::Borrowed(&zone.glue_records),
                ..Answer::positive(Cow::Borrowed(&zone.ns), Outcome::Zone)
            },
            _ => nodata(),
        };
    }

    if let Some(kind) = snap.static_names.get(lower) {
        let records: Cow<'s, [Record]> = match *kind {
            StaticName::Nameserver(i) => {
                let ns = &zone.nameservers[i];
                let owned = zone.glue_records.iter().filter(|r| &r.name == ns);
                let want = |t: RecordType| owned.clone().filter(move |r| r.record_type() == t);
                match qtype {
                    RecordType::A | RecordType::AAAA => Cow::Owned(want(qtype).cloned().collect()),
                    RecordType::ANY => Cow::Owned(owned.take(1).cloned().collect()),
                    _ => Cow::Borrowed(&[]),
                }
            }
            StaticName::Cell(id) => {
                let r = &snap.cell(id).records;
                match qtype {
                    RecordType::A => Cow::Borrowed(&r.host_a[..]),
                    RecordType::AAAA => Cow::Borrowed(&r.host_aaaa[..]),
                    // RFC 8482: one RRset is a full answer to ANY.
                    RecordType::ANY if !r.host_a.is_empty() => Cow::Borrowed(&r.host_a[..]),
                    RecordType::ANY => Cow::Borrowed(&r.host_aaaa[..]),
                    _ => Cow::Borrowed(&[]),
                }
            }
            StaticName::EmptyNonTerminal => Cow::Borrowed(&[]),
        };
        return if records.is_empty() {
            nodata()
        } else {
            Answer::positive(records, Outcome::Zone)
        };
    }

    // Tenants are exactly one label below the apex.
    if lower.num_labels() != zone.origin_lower.num_labels() + 1 {
        return Answer::negative(snap, ResponseCode::NXDomain, Outcome::NxDomain);
    }
    let Some(label) = qname.iter().next() else {
        return Answer::negative(snap, ResponseCode::NXDomain, Outcome::NxDomain);
    };
    let Some(cell_id) = route::lookup(snap, label) else {
        return Answer::negative(snap, ResponseCode::NXDomain, Outcome::NxDomain);
    };
    let records = &snap.cell(cell_id).records;
    let rdata: &[RData] = if let Some(cname) = &records.cname {
        std::slice::from_ref(cname)
    } else {
        match qtype {
            RecordType::A => &records.a,
            RecordType::AAAA => &records.aaaa,
            RecordType::ANY if !records.a.is_empty() => &records.a,
            RecordType::ANY => &records.aaaa,
            _ => &[],
        }
    };
    if rdata.is_empty() {
        return Answer::negative(snap, ResponseCode::NoError, Outcome::TenantNodata(cell_id));
    }
    let answers = rdata
        .iter()
        .map(|rd| Record::from_rdata(qname.clone(), zone.ttl, rd.clone()))
        .collect();
    Answer::positive(Cow::Owned(answers), Outcome::Tenant(cell_id))
}
