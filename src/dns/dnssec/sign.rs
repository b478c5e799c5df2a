//! Signing one zone version: [`Signing`], prepared with the version's
//! answers, holds the keys in force and the apex key RRsets (DNSKEY, CDS,
//! CDNSKEY), signs RRsets through the signature cache, and makes the
//! NSEC records of compact denial (RFC 9824).
//!
//! An RRSIG covers an RRset in canonical form (RFC 4034 §6): owner and
//! names in RDATA lowercase, RDATA sorted. The signed data is built here
//! directly (RRSIG RDATA without the signature, then each RR), because
//! the same canonical RDATA also gives the cache key's content digest.

use std::sync::Arc;

use hickory_proto::dnssec::rdata::{CDNSKEY, CDS, DNSSECRData, NSEC, RRSIG, SigInput};
use hickory_proto::rr::domain::Label;
use hickory_proto::rr::{Name, RData, Record, RecordType, SerialNumber};
use hickory_proto::serialize::binary::{BinEncodable as _, BinEncoder, NameEncoding};
use sha2::{Digest as _, Sha256};

use super::Dnssec;
use super::cache::{CacheKey, Signatures};
use super::keys::{self, Key};
use super::keyset::KeySet;
use crate::map::Zone;

/// The NXNAME meta-type (RFC 9824 §3.3): in the NSEC bitmap of a compact
/// answer for a name that does not exist.
pub(crate) const NXNAME: RecordType = RecordType::Unknown(128);

/// How far in the past signatures start: validators with a slow clock
/// accept them.
pub(crate) const INCEPTION_SKEW: u64 = 3600;

/// What signs the answers of one zone version.
pub(crate) struct Signing {
    dnssec: Arc<Dnssec>,
    keys: Arc<KeySet>,
    /// The zone's name, lowercase: the RRSIG signer name.
    signer: Name,
    /// The DNSKEY RRset (every published key), TTL `apex_ttl`.
    pub(crate) dnskey: Vec<Record>,
    /// CDS for the keys that should have a DS (RFC 7344), TTL `apex_ttl`.
    pub(crate) cds: Vec<Record>,
    /// CDNSKEY for the same keys.
    pub(crate) cdnskey: Vec<Record>,
    /// TTL of NSEC records: min(SOA TTL, SOA MINIMUM) (RFC 9077).
    nsec_ttl: u32,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("signer", &self.signer)
            .field("dnskey", &self.dnskey.len())
            .field("cds", &self.cds.len())
            .finish_non_exhaustive()
    }
}

impl Signing {
    /// Signing for a version of `zone` with the keys in force; `None` when
    /// no key is active (the zone is then served unsigned).
    pub(crate) fn new(dnssec: &Arc<Dnssec>, zone: &Zone) -> Option<Self> {
        let keys = dnssec.key_set();
        if !keys.signing() {
            return None;
        }
        let origin = zone.origin.to_lowercase();
        let ttl = zone.apex_ttl;
        let record =
            |rd: DNSSECRData| Record::from_rdata(zone.origin.clone(), ttl, RData::DNSSEC(rd));
        let dnskey = keys
            .published
            .iter()
            .map(|k| record(DNSSECRData::DNSKEY(k.dnskey().clone())))
            .collect();
        let cds = keys
            .ds
            .iter()
            .filter_map(|k| k.ds(&origin))
            .map(|ds| {
                record(DNSSECRData::CDS(CDS::new(
                    ds.key_tag(),
                    Some(ds.algorithm()),
                    ds.digest_type(),
                    ds.digest().to_vec(),
                )))
            })
            .collect();
        let cdnskey = keys
            .ds
            .iter()
            .map(|k| {
                use hickory_proto::dnssec::PublicKey as _;
                let key = k.dnskey();
                record(DNSSECRData::CDNSKEY(CDNSKEY::with_flags(
                    key.flags(),
                    Some(key.public_key().algorithm()),
                    key.public_key().public_bytes().to_vec(),
                )))
            })
            .collect();
        Some(Self {
            dnssec: dnssec.clone(),
            keys,
            signer: origin,
            dnskey,
            cds,
            cdnskey,
            nsec_ttl: zone.apex_ttl.min(zone.negative_ttl),
        })
    }

    /// Appends to `out` the RRSIGs covering `rrset` (records of one owner,
    /// type and TTL), owned by the name as the RRset has it (the query's
    /// case): from the cache, or signed now and cached.
    pub(crate) fn sign_into(&self, rrset: &[Record], out: &mut Vec<Record>) {
        let Some(first) = rrset.first() else {
            return;
        };
        let rtype = first.record_type();
        let ttl = first.ttl;
        let (signers, signers_id): (Vec<&Arc<Key>>, u64) = match rtype {
            RecordType::DNSKEY => (
                self.keys.key_signers.iter().collect(),
                self.keys.key_signers_id,
            ),
            // The parent checks CDS/CDNSKEY against a key it has a DS for
            // (RFC 7344 §4.1); validators against the zone's keys: both.
            RecordType::CDS | RecordType::CDNSKEY => {
                let mut v: Vec<&Arc<Key>> = self.keys.key_signers.iter().collect();
                for k in &self.keys.zone_signers {
                    if !v.iter().any(|s| Arc::ptr_eq(s, k)) {
                        v.push(k);
                    }
                }
                (
                    v,
                    self.keys.key_signers_id ^ self.keys.zone_signers_id.rotate_left(1),
                )
            }
            _ => (
                self.keys.zone_signers.iter().collect(),
                self.keys.zone_signers_id,
            ),
        };
        let owner = canonical_name(&first.name);
        let mut rdatas: Vec<Vec<u8>> = rrset.iter().map(|r| canonical_rdata(&r.data)).collect();
        rdatas.sort();
        rdatas.dedup();
        let mut digest = Sha256::new();
        digest.update(u16::from(rtype).to_be_bytes());
        digest.update(ttl.to_be_bytes());
        for rd in &rdatas {
            digest.update((rd.len() as u16).to_be_bytes());
            digest.update(rd);
        }
        let mut content = [0u8; 16];
        content.copy_from_slice(&digest.finalize()[..16]);
        let key = CacheKey {
            owner: owner.into_boxed_slice(),
            rtype: u16::from(rtype),
            content,
            signers: signers_id,
        };
        let now = keys::now();
        let cache = &self.dnssec.cache;
        let sigs = match cache.get(&key, now) {
            Some(s) => s,
            None => {
                let s =
                    Arc::new(self.sign_now(&key, &first.name, rtype, ttl, &rdatas, &signers, now));
                // Nothing to cache when every signature failed.
                if !s.rrsigs.is_empty() {
                    cache.insert(key, s.clone());
                }
                s
            }
        };
        out.extend(
            sigs.rrsigs
                .iter()
                .map(|rd| Record::from_rdata(first.name.clone(), ttl, rd.clone())),
        );
    }

    /// Makes the RRSIGs of an RRset (canonical `rdatas`) with `signers`.
    #[allow(clippy::too_many_arguments)]
    fn sign_now(
        &self,
        key: &CacheKey,
        owner: &Name,
        rtype: RecordType,
        ttl: u32,
        rdatas: &[Vec<u8>],
        signers: &[&Arc<Key>],
        now: u64,
    ) -> Signatures {
        let validity = self.dnssec.validity();
        let inception = now.saturating_sub(INCEPTION_SKEW);
        let expiration = now + validity;
        let mut rrsigs = Vec::with_capacity(signers.len());
        for k in signers {
            let input = SigInput {
                type_covered: rtype,
                algorithm: k.algorithm().hickory(),
                // The owner is never a wildcard expansion (RFC 4034 §3.1.3).
                num_labels: owner.num_labels(),
                original_ttl: ttl,
                sig_expiration: SerialNumber::new(expiration as u32),
                sig_inception: SerialNumber::new(inception as u32),
                key_tag: k.tag(),
                signer_name: self.signer.clone(),
            };
            let mut tbs =
                Vec::with_capacity(128 + rdatas.iter().map(|r| r.len() + 64).sum::<usize>());
            {
                let mut e = BinEncoder::new(&mut tbs);
                e.set_canonical_form(true);
                e.set_name_encoding(NameEncoding::UncompressedLowercase);
                if input.emit(&mut e).is_err() {
                    self.dnssec.count_signature(false);
                    continue;
                }
            }
            for rd in rdatas {
                tbs.extend_from_slice(&key.owner);
                tbs.extend_from_slice(&u16::from(rtype).to_be_bytes());
                tbs.extend_from_slice(&1u16.to_be_bytes());
                tbs.extend_from_slice(&ttl.to_be_bytes());
                tbs.extend_from_slice(&(rd.len() as u16).to_be_bytes());
                tbs.extend_from_slice(rd);
            }
            match k.sign(&tbs) {
                Ok(sig) => {
                    self.dnssec.count_signature(true);
                    rrsigs.push(RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(
                        input, sig,
                    ))));
                }
                Err(e) => {
                    self.dnssec.count_signature(false);
                    tracing::warn!(tag = k.tag(), error = %e, "DNSSEC signing failed");
                }
            }
        }
        Signatures {
            rrsigs,
            refresh_at: now + validity / 2,
        }
    }

    /// The NSEC of compact denial at `owner` (RFC 9824 §3): next name the
    /// owner's immediate successor `\000.<owner>`, so it covers no other
    /// name; the bitmap the types at the name plus RRSIG and NSEC, or,
    /// for a name that does not exist (`types` is `None`), RRSIG, NSEC and
    /// NXNAME.
    pub(crate) fn nsec(&self, owner: &Name, types: Option<&[RecordType]>) -> Record {
        let next = successor(&owner.to_lowercase(), &self.signer);
        let mut bitmap: Vec<RecordType> = match types {
            Some(t) => t.to_vec(),
            None => vec![NXNAME],
        };
        bitmap.extend([RecordType::RRSIG, RecordType::NSEC]);
        Record::from_rdata(
            owner.clone(),
            self.nsec_ttl,
            RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(next, bitmap))),
        )
    }

    /// Whether the apex has a CDS/CDNSKEY RRset.
    pub(crate) fn has_cds(&self) -> bool {
        !self.cds.is_empty()
    }
}

/// `name` lowercase in uncompressed wire format.
pub(crate) fn canonical_name(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// `rdata` in canonical form (RFC 4034 §6.2, RFC 6840 §5.1).
fn canonical_rdata(rdata: &RData) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let mut e = BinEncoder::new(&mut buf);
    e.set_canonical_form(true);
    e.set_name_encoding(NameEncoding::Uncompressed);
    // Encoding into a vector fails only for malformed data the answer
    // table never holds; such an RRset gets a signature that fails.
    let _ = rdata.emit(&mut e);
    buf
}

/// The next name of a compact-denial NSEC for `owner` (lowercase) in the
/// zone `origin`: `\000.<owner>`, the immediate successor in canonical
/// order; for an owner too long for another label, the owner with the
/// last octet of its leftmost label that can be incremented incremented
/// (and the labels left of it dropped), which sorts after it and covers
/// only names below it; the origin (the end of the zone) if none can be.
pub(crate) fn successor(owner: &Name, origin: &Name) -> Name {
    if let Ok(zero) = Label::from_raw_bytes(&[0])
        && let Ok(n) = owner.prepend_label(zero)
    {
        return n;
    }
    let labels: Vec<&[u8]> = owner.iter().collect();
    let own = labels
        .len()
        .saturating_sub(usize::from(origin.num_labels()));
    for i in 0..own {
        let label = labels[i];
        let Some((&last, head)) = label.split_last() else {
            continue;
        };
        if last == 0xff {
            continue;
        }
        let mut bumped = head.to_vec();
        bumped.push(last + 1);
        let rest = std::iter::once(bumped.as_slice()).chain(labels[i + 1..].iter().copied());
        if let Ok(mut n) = Name::from_labels(rest) {
            n.set_fqdn(true);
            return n;
        }
    }
    origin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn successor_is_the_zero_label_or_a_bumped_label() {
        let origin = name("cells.example.com.");
        assert_eq!(
            successor(&name("nobody.cells.example.com."), &origin).to_ascii(),
            "\\000.nobody.cells.example.com."
        );
        // Too long for one more label: the leftmost label is bumped.
        let long = format!(
            "{}.{}.{}.{}.cells.example.com.",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(43)
        );
        let owner = name(&long);
        // No room for one more label.
        assert!(
            owner
                .prepend_label(Label::from_raw_bytes(&[0]).unwrap())
                .is_err()
        );
        let next = successor(&owner, &origin);
        assert_eq!(
            next.to_ascii(),
            format!(
                "{}b.{}.{}.{}.cells.example.com.",
                "a".repeat(62),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(43)
            )
        );
        assert!(next > owner);
    }

    #[test]
    fn canonical_names_are_lowercase_wire() {
        assert_eq!(canonical_name(&name("AcMe.Ex.")), b"\x04acme\x02ex\x00");
    }
}
