//! TSIG (RFC 8945) with HMAC-SHA256, for zone transfers and NOTIFY: the key
//! file, checking a request's signature, and signing responses — one
//! message, or the chained messages of a zone transfer (§5.3.1).
//!
//! The MAC arithmetic is hickory-proto's (`TSigner`); this module owns the
//! protocol around it: which error a bad request gets (BADKEY, BADSIG,
//! BADTIME, each answered NOTAUTH), what is signed in the first and in later
//! messages of a transfer, and the TSIG record appended to raw messages
//! (written with `wire`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
pub(super) use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::rdata::tsig::{
    TSIG, TsigAlgorithm, make_tsig_record, signed_bitmessage_to_buf,
};
use hickory_proto::rr::{Name, Record, TSigner};

use super::wire;

/// Fudge (allowed clock difference, seconds) of the TSIG records we send;
/// the RFC 8945 §10 recommendation.
const FUDGE: u16 = 300;

/// The largest fudge a request may claim: a larger one is taken as this.
/// RFC 8945 §5.2.3 checks the time against the request's own fudge, so a
/// client could otherwise ask for 65,535 s (18 hours) and have a captured
/// request replayed for that long. The replay window of a signed request
/// is its time signed ± this (10 minutes in all): within it, a captured
/// transfer request or NOTIFY can be sent again and is answered again
/// (which reveals nothing the first answer did not; TSIG has no nonce).
pub(super) const MAX_REQUEST_FUDGE: u16 = 300;

/// Length of an HMAC-SHA256 MAC.
const MAC_LEN: usize = 32;

/// Shortest secret accepted: RFC 8945 §6 asks for keys at least as long as
/// the MAC (32 bytes); fewer than 16 random bytes is a configuration mistake.
const MIN_SECRET: usize = 16;

/// Why the TSIG key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read the TSIG key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold exactly one valid key line.
    #[error(
        "{path}: {message} (expected one line `NAME hmac-sha256 BASE64SECRET`, e.g. \
         `cellns-xfr. hmac-sha256 $(openssl rand -base64 32)`)"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A TSIG key: its name and the HMAC-SHA256 secret.
#[derive(Clone)]
pub struct Key {
    signer: TSigner,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Key")
            .field("name", self.name())
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key from its name and secret.
    fn new(name: &str, secret: Vec<u8>) -> Result<Self, String> {
        let name =
            Name::from_ascii(name).map_err(|e| format!("`{name}` is not a key name: {e}"))?;
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "the secret is {} bytes; use at least {MIN_SECRET} (32 recommended)",
                secret.len()
            ));
        }
        let signer = TSigner::new(
            secret,
            TsigAlgorithm::HmacSha256,
            name.to_lowercase(),
            FUDGE,
        )
        .map_err(|e| format!("cannot use the key: {e}"))?;
        Ok(Self { signer })
    }

    /// Reads a key file: one line `NAME hmac-sha256 BASE64SECRET`; blank
    /// lines and `#` comments are ignored.
    pub(super) fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        warn_if_world_readable(path);
        Self::parse(&text).map_err(|message| KeyFileError::Format {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses the text of a key file (see [`Key::load`]).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .enumerate()
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((n, line)) = lines.next() else {
            return Err("no key in the file".into());
        };
        if let Some((m, _)) = lines.next() {
            return Err(format!(
                "line {}: only one key is supported (the first is on line {})",
                m + 1,
                n + 1
            ));
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, algorithm, secret] = fields[..] else {
            return Err(format!(
                "line {}: {} field(s), expected 3",
                n + 1,
                fields.len()
            ));
        };
        let algorithm = algorithm.trim_end_matches('.');
        if !algorithm.eq_ignore_ascii_case("hmac-sha256") {
            return Err(format!(
                "line {}: algorithm `{algorithm}` is not supported (only hmac-sha256)",
                n + 1
            ));
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .map_err(|e| format!("line {}: the secret is not base64: {e}", n + 1))?;
        Self::new(name, secret).map_err(|e| format!("line {}: {e}", n + 1))
    }

    /// The key name (lowercase, absolute).
    pub(super) fn name(&self) -> &Name {
        self.signer.signer_name()
    }

    /// The hickory-proto signer (for signing requests, e.g. NOTIFY).
    pub(super) fn signer(&self) -> &TSigner {
        &self.signer
    }
}

#[cfg(unix)]
fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "the TSIG key file is readable by every user; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_: &Path) {}

/// Seconds since the Unix epoch.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a request's TSIG says.
#[derive(Debug)]
pub(super) enum Check {
    /// The request has no TSIG record.
    Unsigned,
    /// Signed with our key, MAC and time good: sign the responses with this.
    Valid(ResponseSigner),
    /// Signed, but not acceptably: answer NOTAUTH carrying the TSIG record
    /// this signer makes (unsigned for BADKEY and BADSIG, signed for
    /// BADTIME, RFC 8945 §5.2).
    Invalid(TsigError, ResponseSigner),
}

/// Checks the TSIG of the request whose wire form is `message`, against
/// `key` (none configured: any signed request is BADKEY), at time `now`.
/// `signature` is the request's decoded TSIG record, if it has one.
pub(super) fn check(
    key: Option<&Key>,
    message: &[u8],
    signature: Option<&Record<TSIG>>,
    now: u64,
) -> Check {
    let Some(sig) = signature else {
        return Check::Unsigned;
    };
    let tsig = &sig.data;
    let unsigned = |error| {
        Check::Invalid(
            error,
            ResponseSigner::unsigned(sig.name.clone(), tsig.algorithm.clone(), tsig.oid, error),
        )
    };
    // §5.2.1: a key we do not have, or the right name with another algorithm.
    let Some(key) = key else {
        return unsigned(TsigError::BadKey);
    };
    if sig.name != *key.name() || tsig.algorithm != TsigAlgorithm::HmacSha256 {
        return unsigned(TsigError::BadKey);
    }
    // §5.2.2: the MAC. Truncated MACs (§5.2.2.1) are not accepted.
    let mac_ok = tsig.mac.len() == MAC_LEN
        && signed_bitmessage_to_buf(message, None, true)
            .is_ok_and(|(tbv, _)| key.signer.verify(&tbv, &tsig.mac).is_ok());
    if !mac_ok {
        return unsigned(TsigError::BadSig);
    }
    let mut signer = ResponseSigner::signed(key, tsig.mac.clone(), tsig.oid);
    // §5.2.3: the time, within the request's fudge, at most
    // MAX_REQUEST_FUDGE (the replay window).
    if now.abs_diff(tsig.time) > u64::from(tsig.fudge.min(MAX_REQUEST_FUDGE)) {
        signer.error = Some(TsigError::BadTime);
        signer.time = Some(tsig.time);
        // Other Data: our time, 48 bits.
        signer.other = now.to_be_bytes()[2..].to_vec();
        return Check::Invalid(TsigError::BadTime, signer);
    }
    Check::Valid(signer)
}

/// Makes the TSIG records of the response messages to one request.
pub(super) struct ResponseSigner {
    key_name: Name,
    algorithm: TsigAlgorithm,
    /// The key, or `None` for the unsigned error records (BADKEY, BADSIG).
    key: Option<TSigner>,
    /// The request's MAC, then each response message's.
    prior_mac: Vec<u8>,
    /// Whether the next message is the first response message.
    first: bool,
    oid: u16,
    error: Option<TsigError>,
    other: Vec<u8>,
    /// Time Signed to use (BADTIME echoes the request's), else the clock.
    time: Option<u64>,
    /// Time Signed of the previous message: never go backwards (§5.3.1).
    last_time: u64,
}

impl std::fmt::Debug for ResponseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSigner")
            .field("key_name", &self.key_name)
            .field("signed", &self.key.is_some())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl ResponseSigner {
    fn signed(key: &Key, request_mac: Vec<u8>, oid: u16) -> Self {
        Self {
            key_name: key.name().clone(),
            algorithm: TsigAlgorithm::HmacSha256,
            key: Some(key.signer.clone()),
            prior_mac: request_mac,
            first: true,
            oid,
            error: None,
            other: Vec::new(),
            time: None,
            last_time: 0,
        }
    }

    fn unsigned(key_name: Name, algorithm: TsigAlgorithm, oid: u16, error: TsigError) -> Self {
        Self {
            key_name,
            algorithm,
            key: None,
            prior_mac: Vec::new(),
            first: true,
            oid,
            error: Some(error),
            other: Vec::new(),
            time: None,
            last_time: 0,
        }
    }

    /// The TSIG RDATA for the next response message, whose wire form
    /// without the TSIG record is `message`; chains the MAC for the next.
    pub(super) fn sign(&mut self, message: &[u8]) -> TSIG {
        let time = self.time.unwrap_or_else(now).max(self.last_time);
        self.last_time = time;
        let mut tsig = TSIG::new(
            self.algorithm.clone(),
            time,
            FUDGE,
            Vec::new(),
            self.oid,
            self.error,
            self.other.clone(),
        );
        let Some(key) = &self.key else {
            return tsig;
        };
        // §5.3.1: prior MAC, the message, then all TSIG variables for the
        // first message, only the timers for later ones.
        let mut tbs = Vec::with_capacity(message.len() + 128);
        tbs.extend_from_slice(&(self.prior_mac.len() as u16).to_be_bytes());
        tbs.extend_from_slice(&self.prior_mac);
        tbs.extend_from_slice(message);
        if self.first {
            wire::put_name_lowercase(&mut tbs, &self.key_name);
            tbs.extend_from_slice(&wire::CLASS_ANY.to_be_bytes());
            tbs.extend_from_slice(&0u32.to_be_bytes()); // TTL
            wire::put_name_lowercase(&mut tbs, &self.algorithm.to_name());
            tbs.extend_from_slice(&time.to_be_bytes()[2..]);
            tbs.extend_from_slice(&FUDGE.to_be_bytes());
            tbs.extend_from_slice(&self.error.map_or(0, u16::from).to_be_bytes());
            tbs.extend_from_slice(&(self.other.len() as u16).to_be_bytes());
            tbs.extend_from_slice(&self.other);
        } else {
            tbs.extend_from_slice(&time.to_be_bytes()[2..]);
            tbs.extend_from_slice(&FUDGE.to_be_bytes());
        }
        // HMAC-SHA256 over a buffer cannot fail; an empty MAC would only
        // make the peer reject the message.
        let mac = key.sign(&tbs).unwrap_or_default();
        self.first = false;
        self.prior_mac.clone_from(&mac);
        tsig = tsig.set_mac(mac);
        tsig
    }

    /// The TSIG record for the next response message (see [`Self::sign`]).
    pub(super) fn record(&mut self, message: &[u8]) -> Record<TSIG> {
        let tsig = self.sign(message);
        make_tsig_record(self.key_name.clone(), tsig)
    }

    /// Signs the message in `buf[start..]` (complete, without TSIG): appends
    /// the TSIG record and counts it in ARCOUNT.
    pub(super) fn append(&mut self, buf: &mut Vec<u8>, start: usize) {
        let tsig = self.sign(&buf[start..]);
        wire::put_name_lowercase(buf, &self.key_name);
        let rdlen_at = wire::begin_record(buf, wire::TYPE_TSIG, wire::CLASS_ANY, 0);
        wire::put_name_lowercase(buf, &tsig.algorithm.to_name());
        buf.extend_from_slice(&tsig.time.to_be_bytes()[2..]);
        buf.extend_from_slice(&tsig.fudge.to_be_bytes());
        buf.extend_from_slice(&(tsig.mac.len() as u16).to_be_bytes());
        buf.extend_from_slice(&tsig.mac);
        buf.extend_from_slice(&tsig.oid.to_be_bytes());
        buf.extend_from_slice(&tsig.error.map_or(0, u16::from).to_be_bytes());
        buf.extend_from_slice(&(tsig.other.len() as u16).to_be_bytes());
        buf.extend_from_slice(&tsig.other);
        wire::end_record(buf, rdlen_at);
        wire::add_one(&mut buf[start..], wire::Section::Additional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, RecordType};
    use hickory_proto::serialize::binary::BinEncodable as _;

    const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";

    fn key() -> Key {
        Key::parse(&format!("# comment\n\nxfr-key. hmac-sha256 {SECRET}\n")).expect("key")
    }

    /// A signed AXFR request and the client's verifier for the responses.
    fn signed_request(key: &Key, time: u64) -> (Vec<u8>, hickory_proto::rr::TSigVerifier) {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("example.test.").expect("name"),
            RecordType::AXFR,
        ));
        let verifier = m
            .finalize(key.signer(), time)
            .expect("sign")
            .expect("verifier");
        (m.to_bytes().expect("encode"), verifier)
    }

    fn decoded_sig(bytes: &[u8]) -> Option<Box<Record<TSIG>>> {
        Message::from_vec(bytes).expect("decode").signature
    }

    /// A response message with ID `id`; `n` makes each one different, so
    /// the MAC chain is really exercised.
    fn response(id: u16, n: u8) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.add_answer(Record::from_rdata(
            Name::from_ascii("a.example.test.").expect("name"),
            30,
            RData::A(A::new(192, 0, 2, n)),
        ));
        m.to_bytes().expect("encode")
    }

    /// A request claiming the largest fudge (65,535 s) is checked against
    /// [`MAX_REQUEST_FUDGE`]: it cannot be replayed for 18 hours.
    #[test]
    fn a_request_fudge_is_capped_at_300_seconds() {
        let k = key();
        let wide = TSigner::new(
            base64::engine::general_purpose::STANDARD
                .decode(SECRET)
                .expect("base64"),
            TsigAlgorithm::HmacSha256,
            k.name().clone(),
            u16::MAX,
        )
        .expect("signer");
        let t = now();
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("example.test.").expect("name"),
            RecordType::AXFR,
        ));
        m.finalize(&wide, t).expect("sign");
        let req = m.to_bytes().expect("encode");
        let sig = decoded_sig(&req);
        assert_eq!(sig.as_ref().map(|s| s.data.fudge), Some(u16::MAX));
        assert!(matches!(
            check(
                Some(&k),
                &req,
                sig.as_deref(),
                t + u64::from(MAX_REQUEST_FUDGE)
            ),
            Check::Valid(_)
        ));
        for late in [
            t + u64::from(MAX_REQUEST_FUDGE) + 1,
            t + 3600,
            t - u64::from(MAX_REQUEST_FUDGE) - 1,
        ] {
            assert!(
                matches!(
                    check(Some(&k), &req, sig.as_deref(), late),
                    Check::Invalid(TsigError::BadTime, _)
                ),
                "replayed {}s after signing",
                late as i64 - t as i64
            );
        }
    }

    #[test]
    fn parses_the_key_file_format() {
        let k = key();
        assert_eq!(k.name().to_ascii(), "xfr-key.");
        for (text, want) in [
            ("", "no key"),
            ("a hmac-sha256", "2 field(s)"),
            (&format!("a hmac-md5 {SECRET}"), "not supported"),
            ("a hmac-sha256 !!!", "not base64"),
            ("a hmac-sha256 c2hvcnQ=", "at least 16"),
            (
                &format!("a hmac-sha256 {SECRET}\nb hmac-sha256 {SECRET}"),
                "only one key",
            ),
        ] {
            let e = Key::parse(text).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // Algorithm names are case-insensitive and may be absolute.
        Key::parse(&format!("k HMAC-SHA256. {SECRET}")).expect("absolute algorithm name");
    }

    #[test]
    fn valid_request_and_a_chained_multi_message_response_verify() {
        let k = key();
        let now = now();
        let (req, mut verifier) = signed_request(&k, now);
        let sig = decoded_sig(&req);
        let Check::Valid(mut signer) = check(Some(&k), &req, sig.as_deref(), now) else {
            panic!("request should verify");
        };
        // Three response messages, each signed, as a transfer sends them;
        // hickory's client verifier checks the chain (first message with
        // all variables, later ones with the timers only).
        for n in 0..3u8 {
            let mut msg = response(4242, n);
            signer.append(&mut msg, 0);
            verifier
                .verify(&msg)
                .unwrap_or_else(|e| panic!("message {n} does not verify: {e}"));
        }
    }

    #[test]
    fn hickory_record_and_raw_append_carry_the_same_mac() {
        let k = key();
        let now = now();
        let (req, _) = signed_request(&k, now);
        let sig = decoded_sig(&req);
        let (Check::Valid(mut a), Check::Valid(mut b)) = (
            check(Some(&k), &req, sig.as_deref(), now),
            check(Some(&k), &req, sig.as_deref(), now),
        ) else {
            panic!("request should verify");
        };
        let msg = response(4242, 1);
        let rec = a.record(&msg);
        let mut raw = msg.clone();
        b.append(&mut raw, 0);
        let decoded = decoded_sig(&raw).expect("TSIG in the raw message");
        assert_eq!(decoded.data.mac, rec.data.mac);
        assert_eq!(decoded.name, rec.name);
    }

    #[test]
    fn bad_requests_get_the_rfc_8945_errors() {
        let k = key();
        let now = now();
        let (req, _) = signed_request(&k, now);
        let sig = decoded_sig(&req);

        // No key configured, or another key: BADKEY, unsigned.
        let other = Key::parse(&format!("other. hmac-sha256 {SECRET}")).expect("key");
        for key in [None, Some(&other)] {
            let Check::Invalid(TsigError::BadKey, mut s) = check(key, &req, sig.as_deref(), now)
            else {
                panic!("expected BADKEY");
            };
            assert!(s.sign(&req).mac.is_empty(), "BADKEY replies are unsigned");
        }

        // Same name, another secret: BADSIG, unsigned.
        let wrong =
            Key::parse("xfr-key. hmac-sha256 d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc=").expect("key");
        let Check::Invalid(TsigError::BadSig, mut s) =
            check(Some(&wrong), &req, sig.as_deref(), now)
        else {
            panic!("expected BADSIG");
        };
        assert!(s.sign(&req).mac.is_empty());

        // A tampered message (the RD bit; the ID is not covered, §4.3.1
        // uses the original ID): BADSIG.
        let mut tampered = req.clone();
        tampered[2] ^= 0x01;
        assert!(matches!(
            check(Some(&k), &tampered, sig.as_deref(), now),
            Check::Invalid(TsigError::BadSig, _)
        ));

        // Outside the fudge: BADTIME, signed, with our time in Other Data.
        let late = now + u64::from(FUDGE) + 1;
        let Check::Invalid(TsigError::BadTime, mut s) = check(Some(&k), &req, sig.as_deref(), late)
        else {
            panic!("expected BADTIME");
        };
        let t = s.sign(&req);
        assert_eq!(t.mac.len(), MAC_LEN);
        assert_eq!(t.time, now, "BADTIME echoes the request's time");
        assert_eq!(t.other, late.to_be_bytes()[2..].to_vec());

        // Unsigned.
        assert!(matches!(check(Some(&k), &req, None, now), Check::Unsigned));
    }
}
