//! What a query gets: the decision table of DESIGN.md ("What a query gets"),
//! as a pure function of a zone version (its view and prepared answers) and
//! a question. Protocol concerns (EDNS, truncation, opcodes) live in
//! `handler`, malformed input in [`super::dispatch`]. [`Outcome`] is what
//! the fast path reports too.
//!
//! When the zone is signed, [`sign`] turns an answer into its DNSSEC form
//! for a query with the DO bit: RRSIGs on the authoritative RRsets, and
//! compact denial (RFC 9824) for negative answers. Which types a name has
//! (the NSEC bitmap) is the table's knowledge, so that lives here too.

use std::borrow::Cow;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use super::prepared::{Answers, Live};
use crate::map::{CellId, StaticName};
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
pub(super) struct Answer<'s> {
    /// NOERROR, NXDOMAIN or REFUSED.
    pub(super) rcode: ResponseCode,
    /// AA flag: set for everything inside the zone.
    pub(super) authoritative: bool,
    /// Answer section.
    pub(super) answers: Cow<'s, [Record]>,
    /// Authority section (the SOA of negative answers).
    pub(super) authority: Cow<'s, [Record]>,
    /// Additional section (glue for NS answers).
    pub(super) additional: Cow<'s, [Record]>,
    /// What happened, for metrics.
    pub(super) outcome: Outcome,
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

    fn negative(answers: &'s Answers, rcode: ResponseCode, outcome: Outcome) -> Self {
        Self {
            rcode,
            authoritative: true,
            answers: Cow::Borrowed(&[]),
            authority: Cow::Borrowed(std::slice::from_ref(&answers.negative_soa)),
            additional: Cow::Borrowed(&[]),
            outcome,
        }
    }
}

/// Answers one question. `qname` is the question's name as sent (its case
/// is kept in owner names); `lower` the same name lowercased.
pub(super) fn answer<'s>(
    live: &'s Live,
    qname: &Name,
    lower: &LowerName,
    qtype: RecordType,
    qclass: DNSClass,
) -> Answer<'s> {
    let (view, prepared) = (&*live.view, &live.answers);
    let snap = view.map();
    let zone = &snap.zone;
    if qclass != DNSClass::IN && qclass != DNSClass::ANY || !zone.origin_lower.zone_of(lower) {
        return Answer::refused();
    }
    // Zone transfers are not answers from this table: refused, the answer
    // RFC 5936 gives for transfers a server will not serve, unless a
    // transfer handler takes the query first.
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return Answer::refused();
    }
    let nodata = || Answer::negative(prepared, ResponseCode::NoError, Outcome::Zone);

    if *lower == zone.origin_lower {
        return match qtype {
            RecordType::SOA | RecordType::ANY => Answer::positive(
                Cow::Borrowed(std::slice::from_ref(&prepared.soa)),
                Outcome::Zone,
            ),
            RecordType::NS => Answer {
                additional: Cow::Borrowed(&prepared.glue),
                ..Answer::positive(Cow::Borrowed(&prepared.ns), Outcome::Zone)
            },
            // The apex key RRsets exist while the zone is signed, whether
            // or not the query has the DO bit.
            RecordType::DNSKEY | RecordType::CDS | RecordType::CDNSKEY => {
                let rrset = prepared.dnssec.as_ref().map_or(&[][..], |s| match qtype {
                    RecordType::DNSKEY => &s.dnskey[..],
                    RecordType::CDS => &s.cds[..],
                    _ => &s.cdnskey[..],
                });
                if rrset.is_empty() {
                    nodata()
                } else {
                    Answer::positive(Cow::Borrowed(rrset), Outcome::Zone)
                }
            }
            _ => nodata(),
        };
    }

    if let Some(kind) = snap.static_names.get(lower) {
        let records: Cow<'s, [Record]> = match *kind {
            StaticName::Nameserver(i) => {
                let ns = &zone.nameservers[i];
                let owned = prepared.glue.iter().filter(|r| &r.name == ns);
                let want = |t: RecordType| owned.clone().filter(move |r| r.record_type() == t);
                // RFC 8482: ANY gets one whole RRset, the first one the name has.
                let rtype = match qtype {
                    RecordType::ANY => owned.clone().next().map(Record::record_type),
                    RecordType::A | RecordType::AAAA => Some(qtype),
                    _ => None,
                };
                match rtype {
                    Some(t) => Cow::Owned(want(t).cloned().collect()),
                    None => Cow::Borrowed(&[]),
                }
            }
            StaticName::Cell(id) => {
                let r = prepared.cell(id);
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
        return Answer::negative(prepared, ResponseCode::NXDomain, Outcome::NxDomain);
    }
    let Some(label) = qname.iter().next() else {
        return Answer::negative(prepared, ResponseCode::NXDomain, Outcome::NxDomain);
    };
    let Some(target) = route::lookup_target(view, label) else {
        return Answer::negative(prepared, ResponseCode::NXDomain, Outcome::NxDomain);
    };
    let cell_id = target.cell;
    // A tenant with a planned move near carries the short TTL.
    let ttl = if target.short_ttl {
        zone.move_ttl
    } else {
        zone.ttl
    };
    let records = prepared.cell(cell_id);
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
        return Answer::negative(
            prepared,
            ResponseCode::NoError,
            Outcome::TenantNodata(cell_id),
        );
    }
    let answers = rdata
        .iter()
        .map(|rd| Record::from_rdata(qname.clone(), ttl, rd.clone()))
        .collect();
    Answer::positive(Cow::Owned(answers), Outcome::Tenant(cell_id))
}

/// The DNSSEC form of `a`, the answer to `qname`/`qtype` (`lower` its
/// lowercase form), for a query with the DO bit; `a` itself when the zone
/// is not signed or the answer is not ours (REFUSED).
///
/// - Positive: each RRset of the answer section with its RRSIGs. The
///   additional section (glue) is not signed: a resolver that needs those
///   addresses validated asks for them.
/// - Negative (RFC 9824): the SOA and the NSEC of compact denial in the
///   authority section, each with its RRSIGs. A name that does not exist
///   gets NOERROR (NXDOMAIN when the query set the Compact Answers OK flag,
///   `compact_ok`, RFC 9824 §4) and an NSEC whose bitmap is RRSIG NSEC
///   NXNAME; NODATA gets an NSEC with the name's types.
/// - qtype NSEC: that NSEC (and its RRSIG) as the answer.
/// - qtype RRSIG (asked as ANY by the handler): the RRSIGs of the one
///   RRset ANY gets (RFC 8482).
pub(super) fn sign<'s>(
    live: &'s Live,
    a: Answer<'s>,
    qname: &Name,
    lower: &LowerName,
    qtype: RecordType,
    compact_ok: bool,
) -> Answer<'s> {
    let Some(signing) = &live.answers.dnssec else {
        return a;
    };
    if !a.authoritative {
        return a;
    }
    let exists = a.rcode != ResponseCode::NXDomain;
    if qtype == RecordType::NSEC {
        let types = exists.then(|| types_at(live, lower, a.outcome));
        let nsec = signing.nsec(qname, types.as_deref());
        let mut answers = Vec::with_capacity(3);
        signing.sign_into(std::slice::from_ref(&nsec), &mut answers);
        answers.insert(0, nsec);
        return Answer {
            rcode: ResponseCode::NoError,
            answers: Cow::Owned(answers),
            authority: Cow::Borrowed(&[]),
            additional: Cow::Borrowed(&[]),
            ..a
        };
    }
    if a.answers.is_empty() {
        let types = exists.then(|| types_at(live, lower, a.outcome));
        let mut authority = Vec::with_capacity(a.authority.len() * 2 + 3);
        for rrset in rrsets(&a.authority) {
            authority.extend(rrset.iter().cloned());
            signing.sign_into(rrset, &mut authority);
        }
        let nsec = signing.nsec(qname, types.as_deref());
        let mut sigs = Vec::with_capacity(2);
        signing.sign_into(std::slice::from_ref(&nsec), &mut sigs);
        authority.push(nsec);
        authority.append(&mut sigs);
        let rcode = if !exists && !compact_ok {
            // Still an unknown name for the metrics (and the alert on
            // them), though the wire says NOERROR.
            crate::metrics::dns().compact_denial();
            ResponseCode::NoError
        } else {
            a.rcode
        };
        return Answer {
            rcode,
            authority: Cow::Owned(authority),
            ..a
        };
    }
    let mut answers = Vec::with_capacity(a.answers.len() * 2);
    for rrset in rrsets(&a.answers) {
        if qtype != RecordType::RRSIG {
            answers.extend(rrset.iter().cloned());
        }
        signing.sign_into(rrset, &mut answers);
    }
    Answer {
        answers: Cow::Owned(answers),
        ..a
    }
}

/// The RRsets of a section: runs of records with the same owner and type.
fn rrsets(records: &[Record]) -> impl Iterator<Item = &[Record]> {
    records.chunk_by(|x, y| x.record_type() == y.record_type() && x.name == y.name)
}

/// The types a name that exists has, for the NSEC bitmap of NODATA;
/// `outcome` is what the table answered for it.
fn types_at(live: &Live, lower: &LowerName, outcome: Outcome) -> Vec<RecordType> {
    let (snap, prepared) = (live.view.map(), &live.answers);
    let cell_types = |a: bool, aaaa: bool| {
        let mut v = Vec::with_capacity(2);
        if a {
            v.push(RecordType::A);
        }
        if aaaa {
            v.push(RecordType::AAAA);
        }
        v
    };
    match outcome {
        Outcome::Tenant(id) | Outcome::TenantNodata(id) => {
            let r = prepared.cell(id);
            if r.cname.is_some() {
                vec![RecordType::CNAME]
            } else {
                cell_types(!r.a.is_empty(), !r.aaaa.is_empty())
            }
        }
        _ if *lower == snap.zone.origin_lower => {
            let mut v = vec![RecordType::SOA, RecordType::NS];
            if let Some(s) = &prepared.dnssec {
                v.push(RecordType::DNSKEY);
                if s.has_cds() {
                    v.extend([RecordType::CDS, RecordType::CDNSKEY]);
                }
            }
            v
        }
        _ => match snap.static_names.get(lower) {
            Some(StaticName::Nameserver(i)) => {
                let ns = &snap.zone.nameservers[*i];
                let has = |t: RecordType| {
                    prepared
                        .glue
                        .iter()
                        .any(|r| &r.name == ns && r.record_type() == t)
                };
                cell_types(has(RecordType::A), has(RecordType::AAAA))
            }
            Some(StaticName::Cell(id)) => {
                let r = prepared.cell(*id);
                cell_types(!r.host_a.is_empty(), !r.host_aaaa.is_empty())
            }
            Some(StaticName::EmptyNonTerminal) | None => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {

    use std::sync::Arc;

    use super::*;
    use crate::dns::prepared::store_of;
    use crate::map::{Format, Snapshot, Source, load_example, load_str};

    /// A zone version to ask; derefs to its map.
    struct Zone(Arc<Live>);

    impl std::ops::Deref for Zone {
        type Target = Snapshot;
        fn deref(&self) -> &Snapshot {
            self.0.view.map()
        }
    }

    impl Zone {
        fn serial(&self) -> u32 {
            self.0.view.serial()
        }
    }

    fn zone(map: Snapshot) -> Zone {
        Zone(store_of(map).load_full())
    }

    fn example() -> Zone {
        zone(load_example().expect("example map"))
    }

    /// The example map with `edit` applied to its text.
    fn example_with(edit: impl Fn(&str) -> String) -> Zone {
        let text = edit(crate::map::EXAMPLE_MAP);
        zone(
            load_str(Source {
                text: &text,
                format: Format::Toml,
                name: "test.toml",
            })
            .expect("test map"),
        )
    }

    fn ask<'s>(snap: &'s Zone, name: &str, qtype: RecordType) -> Answer<'s> {
        ask_class(snap, name, qtype, DNSClass::IN)
    }

    fn ask_class<'s>(snap: &'s Zone, name: &str, qtype: RecordType, class: DNSClass) -> Answer<'s> {
        let qname = Name::from_ascii(name).expect("name");
        let lower = LowerName::new(&qname);
        answer(&snap.0, &qname, &lower, qtype, class)
    }

    /// `owner ttl TYPE rdata`, owner in the case it has.
    fn rrs(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.name.to_ascii(),
                    r.ttl,
                    r.record_type(),
                    r.data
                )
            })
            .collect()
    }

    fn cell(snap: &Zone, id: &str) -> CellId {
        snap.cell_by_id(id).expect("cell")
    }

    /// A positive answer: NOERROR, AA, the given answer records, nothing else.
    #[track_caller]
    fn assert_positive(a: &Answer<'_>, answers: &[&str]) {
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.authoritative);
        assert_eq!(rrs(&a.answers), answers);
        assert!(a.authority.is_empty(), "authority: {:?}", rrs(&a.authority));
        assert!(a.additional.is_empty());
    }

    /// A negative answer: AA, no answers, the SOA with the RFC 2308 TTL.
    #[track_caller]
    fn assert_negative(snap: &Zone, a: &Answer<'_>, rcode: ResponseCode) {
        assert_eq!(a.rcode, rcode);
        assert!(a.authoritative);
        assert!(a.answers.is_empty(), "answers: {:?}", rrs(&a.answers));
        assert!(a.additional.is_empty());
        let z = &snap.zone;
        assert_eq!(
            rrs(&a.authority),
            [format!(
                "cells.example.com. {} SOA ns1.cells.example.com. hostmaster.example.com. {} {} {} {} {}",
                z.apex_ttl.min(z.negative_ttl),
                snap.serial(),
                z.refresh,
                z.retry,
                z.expire,
                z.negative_ttl
            )]
        );
    }

    #[track_caller]
    fn assert_refused(a: &Answer<'_>) {
        assert_eq!(a.rcode, ResponseCode::Refused);
        assert!(!a.authoritative);
        assert!(a.answers.is_empty() && a.authority.is_empty() && a.additional.is_empty());
        assert_eq!(a.outcome, Outcome::Refused);
    }

    #[test]
    fn tenant_gets_its_cells_addresses() {
        let snap = example();
        let a = ask(&snap, "acme.cells.example.com.", RecordType::A);
        assert_positive(
            &a,
            &[
                "acme.cells.example.com. 30 A 192.0.2.10",
                "acme.cells.example.com. 30 A 192.0.2.11",
            ],
        );
        assert_eq!(a.outcome, Outcome::Tenant(cell(&snap, "use1-a")));
        let a = ask(&snap, "acme.cells.example.com.", RecordType::AAAA);
        assert_positive(&a, &["acme.cells.example.com. 30 AAAA 2001:db8::10"]);
        let a = ask(&snap, "globex.cells.example.com.", RecordType::A);
        assert_positive(&a, &["globex.cells.example.com. 30 A 192.0.2.20"]);
    }

    #[test]
    fn tenant_lookup_ignores_case_and_answers_in_the_query_case() {
        let snap = example();
        let a = ask(&snap, "AcMe.CELLS.example.COM.", RecordType::A);
        assert_positive(
            &a,
            &[
                "AcMe.CELLS.example.COM. 30 A 192.0.2.10",
                "AcMe.CELLS.example.COM. 30 A 192.0.2.11",
            ],
        );
    }

    #[test]
    fn down_cells_tenant_gets_the_failover_cell() {
        let snap = example();
        let a = ask(&snap, "hooli.cells.example.com.", RecordType::A);
        assert_positive(&a, &["hooli.cells.example.com. 30 A 192.0.2.20"]);
        assert_eq!(a.outcome, Outcome::Tenant(cell(&snap, "use1-b")));
        let a = ask(&snap, "hooli.cells.example.com.", RecordType::AAAA);
        assert_positive(&a, &["hooli.cells.example.com. 30 AAAA 2001:db8::20"]);
    }

    #[test]
    fn draining_cell_still_serves_its_tenants() {
        let snap = example();
        let a = ask(&snap, "initech.cells.example.com.", RecordType::A);
        assert_positive(&a, &["initech.cells.example.com. 30 A 198.51.100.10"]);
        // euw1-a has no IPv6: NODATA, not NXDOMAIN.
        let a = ask(&snap, "initech.cells.example.com.", RecordType::AAAA);
        assert_negative(&snap, &a, ResponseCode::NoError);
        assert_eq!(a.outcome, Outcome::TenantNodata(cell(&snap, "euw1-a")));
    }

    #[test]
    fn out_of_zone_cell_is_a_cname_for_every_type() {
        let snap = example();
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::CNAME,
            RecordType::ANY,
        ] {
            let a = ask(&snap, "umbrella.cells.example.com.", t);
            assert_positive(
                &a,
                &["umbrella.cells.example.com. 30 CNAME apse1-a.lb.example.net."],
            );
            assert_eq!(a.outcome, Outcome::Tenant(cell(&snap, "apse1-a")));
        }
    }

    #[test]
    fn tenant_other_types_are_nodata_with_soa() {
        let snap = example();
        for t in [
            RecordType::TXT,
            RecordType::MX,
            RecordType::NS,
            RecordType::SOA,
            RecordType::CAA,
            RecordType::HTTPS,
            RecordType::CNAME,
        ] {
            let a = ask(&snap, "acme.cells.example.com.", t);
            assert_negative(&snap, &a, ResponseCode::NoError);
            assert_eq!(
                a.outcome,
                Outcome::TenantNodata(cell(&snap, "use1-a")),
                "{t}"
            );
        }
    }

    #[test]
    fn negative_soa_ttl_is_the_smaller_of_apex_and_negative_ttl() {
        // RFC 2308 §3: min(SOA TTL, SOA MINIMUM), both ways round.
        let snap = example_with(|t| t.replace("negative_ttl = 30", "negative_ttl = 600"));
        assert_eq!((snap.zone.apex_ttl, snap.zone.negative_ttl), (3600, 600));
        let a = ask(&snap, "nobody.cells.example.com.", RecordType::A);
        assert_eq!(a.authority[0].ttl, 600);
        let snap =
            example_with(|t| t.replace("negative_ttl = 30", "negative_ttl = 900\napex_ttl = 120"));
        let a = ask(&snap, "acme.cells.example.com.", RecordType::TXT);
        assert_eq!(a.authority[0].ttl, 120);
        assert_negative(&snap, &a, ResponseCode::NoError);
    }

    #[test]
    fn unknown_tenant_is_nxdomain_with_soa() {
        let snap = example();
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::ANY,
        ] {
            let a = ask(&snap, "nobody.cells.example.com.", t);
            assert_negative(&snap, &a, ResponseCode::NXDomain);
            assert_eq!(a.outcome, Outcome::NxDomain);
        }
    }

    #[test]
    fn names_below_tenants_and_cells_are_nxdomain() {
        let snap = example();
        for name in [
            "x.acme.cells.example.com.",
            "a.b.acme.cells.example.com.",
            "x.use1-a.cells.example.com.",
            "x.ns1.cells.example.com.",
            "x.umbrella.cells.example.com.",
        ] {
            let a = ask(&snap, name, RecordType::A);
            assert_negative(&snap, &a, ResponseCode::NXDomain);
        }
    }

    #[test]
    fn apex_soa_ns_and_glue() {
        let snap = example();
        let a = ask(&snap, "cells.example.com.", RecordType::SOA);
        assert_positive(
            &a,
            &[format!(
                "cells.example.com. 3600 SOA ns1.cells.example.com. hostmaster.example.com. {} 300 60 1209600 30",
                snap.serial()
            )
            .as_str()],
        );
        let a = ask(&snap, "cells.example.com.", RecordType::NS);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.authoritative);
        assert_eq!(
            rrs(&a.answers),
            [
                "cells.example.com. 3600 NS ns1.cells.example.com.",
                "cells.example.com. 3600 NS ns2.cells.example.com.",
            ]
        );
        assert!(a.authority.is_empty());
        assert_eq!(
            rrs(&a.additional),
            [
                "ns1.cells.example.com. 3600 A 192.0.2.53",
                "ns1.cells.example.com. 3600 AAAA 2001:db8::53",
                "ns2.cells.example.com. 3600 A 198.51.100.53",
            ]
        );
        // RFC 8482: ANY gets one RRset.
        let a = ask(&snap, "cells.example.com.", RecordType::ANY);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].record_type(), RecordType::SOA);
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::MX,
        ] {
            assert_negative(
                &snap,
                &ask(&snap, "cells.example.com.", t),
                ResponseCode::NoError,
            );
        }
    }

    #[test]
    fn out_of_zone_glue_is_not_given() {
        let snap = example_with(|t| {
            t.replace(
                "nameservers = [\"ns1.cells.example.com.\", \"ns2.cells.example.com.\"]",
                "nameservers = [\"ns1.cells.example.com.\", \"ns.example.net.\"]",
            )
            .replace("\"ns2.cells.example.com.\" = [\"198.51.100.53\"]\n", "")
        });
        let a = ask(&snap, "cells.example.com.", RecordType::NS);
        assert_eq!(a.answers.len(), 2);
        assert_eq!(
            rrs(&a.additional),
            [
                "ns1.cells.example.com. 3600 A 192.0.2.53",
                "ns1.cells.example.com. 3600 AAAA 2001:db8::53",
            ]
        );
    }

    #[test]
    fn nameserver_hostnames_answer_their_glue() {
        let snap = example();
        assert_positive(
            &ask(&snap, "ns1.cells.example.com.", RecordType::A),
            &["ns1.cells.example.com. 3600 A 192.0.2.53"],
        );
        assert_positive(
            &ask(&snap, "ns1.cells.example.com.", RecordType::AAAA),
            &["ns1.cells.example.com. 3600 AAAA 2001:db8::53"],
        );
        assert_negative(
            &snap,
            &ask(&snap, "ns2.cells.example.com.", RecordType::AAAA),
            ResponseCode::NoError,
        );
        assert_negative(
            &snap,
            &ask(&snap, "ns1.cells.example.com.", RecordType::TXT),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn any_at_a_nameserver_is_one_whole_rrset() {
        let snap = example_with(|t| {
            t.replace(
                "[\"192.0.2.53\", \"2001:db8::53\"]",
                "[\"192.0.2.53\", \"2001:db8::53\", \"192.0.2.54\"]",
            )
        });
        let a = ask(&snap, "ns1.cells.example.com.", RecordType::ANY);
        assert_positive(
            &a,
            &[
                "ns1.cells.example.com. 3600 A 192.0.2.53",
                "ns1.cells.example.com. 3600 A 192.0.2.54",
            ],
        );
    }

    #[test]
    fn any_at_a_tenant_or_cell_is_one_rrset() {
        let snap = example();
        assert_positive(
            &ask(&snap, "acme.cells.example.com.", RecordType::ANY),
            &[
                "acme.cells.example.com. 30 A 192.0.2.10",
                "acme.cells.example.com. 30 A 192.0.2.11",
            ],
        );
        assert_positive(
            &ask(&snap, "use1-b.cells.example.com.", RecordType::ANY),
            &["use1-b.cells.example.com. 30 A 192.0.2.20"],
        );
    }

    #[test]
    fn in_zone_cell_hostnames_answer_their_addresses() {
        let snap = example();
        let a = ask(&snap, "use1-a.cells.example.com.", RecordType::A);
        assert_positive(
            &a,
            &[
                "use1-a.cells.example.com. 30 A 192.0.2.10",
                "use1-a.cells.example.com. 30 A 192.0.2.11",
            ],
        );
        assert_eq!(a.outcome, Outcome::Zone);
        assert_positive(
            &ask(&snap, "USE1-A.cells.example.com.", RecordType::AAAA),
            &["use1-a.cells.example.com. 30 AAAA 2001:db8::10"],
        );
        // A down cell's own name still resolves: it names that cell.
        assert_positive(
            &ask(&snap, "usw2-a.cells.example.com.", RecordType::A),
            &["usw2-a.cells.example.com. 30 A 203.0.113.10"],
        );
        assert_negative(
            &snap,
            &ask(&snap, "euw1-a.cells.example.com.", RecordType::AAAA),
            ResponseCode::NoError,
        );
        assert_negative(
            &snap,
            &ask(&snap, "use1-a.cells.example.com.", RecordType::MX),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn empty_non_terminal_is_nodata() {
        let snap = example_with(|t| {
            t.replace(
                "hostname = \"use1-b.cells.example.com.\"",
                "hostname = \"b.us.cells.example.com.\"",
            )
        });
        for t in [RecordType::A, RecordType::TXT, RecordType::ANY] {
            let a = ask(&snap, "us.cells.example.com.", t);
            assert_negative(&snap, &a, ResponseCode::NoError);
            assert_eq!(a.outcome, Outcome::Zone);
        }
        assert_positive(
            &ask(&snap, "b.us.cells.example.com.", RecordType::A),
            &["b.us.cells.example.com. 30 A 192.0.2.20"],
        );
        assert_negative(
            &snap,
            &ask(&snap, "c.us.cells.example.com.", RecordType::A),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        let snap = example();
        for name in [
            "example.org.",
            "www.example.org.",
            "example.com.",
            "com.",
            ".",
            "acme.cells.example.com.evil.",
            "xcells.example.com.",
        ] {
            assert_refused(&ask(&snap, name, RecordType::A));
        }
        // Other classes are not ours either.
        for class in [DNSClass::CH, DNSClass::HS, DNSClass::NONE] {
            assert_refused(&ask_class(
                &snap,
                "acme.cells.example.com.",
                RecordType::A,
                class,
            ));
        }
        // QCLASS ANY (255) matches IN.
        let a = ask_class(
            &snap,
            "acme.cells.example.com.",
            RecordType::A,
            DNSClass::ANY,
        );
        assert_eq!(a.answers.len(), 2);
    }

    #[test]
    fn zone_transfers_are_refused() {
        let snap = example();
        for t in [RecordType::AXFR, RecordType::IXFR] {
            assert_refused(&ask(&snap, "cells.example.com.", t));
        }
    }

    #[test]
    fn hashed_placement_answers_unlisted_tenants_with_an_active_cell() {
        let snap = example_with(|t| t.replace("unknown = \"nxdomain\"", "unknown = \"hash\""));
        for tenant in ["newco", "startup-42", "zz"] {
            let name = format!("{tenant}.cells.example.com.");
            let a = ask(&snap, &name, RecordType::A);
            let Outcome::Tenant(id) = a.outcome else {
                panic!("{tenant}: {:?}", a.outcome);
            };
            assert_eq!(Some(id), route::lookup(&snap.0.view, tenant.as_bytes()));
            let c = snap.cell(id);
            assert_eq!(c.status, crate::map::Status::Active, "{tenant} → {}", c.id);
            assert_eq!(a.rcode, ResponseCode::NoError);
            // The answer is that cell's records (its A set, or a CNAME).
            let want: Vec<String> = match &snap.0.answers.cell(id).cname {
                Some(cname) => vec![format!("{name} 30 CNAME {cname}")],
                None => c
                    .ipv4
                    .iter()
                    .map(|ip| format!("{name} 30 A {ip}"))
                    .collect(),
            };
            if want.is_empty() {
                assert_negative(&snap, &a, ResponseCode::NoError);
            } else {
                assert_eq!(rrs(&a.answers), want);
            }
        }
    }
}
