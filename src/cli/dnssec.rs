//! `cellns dnssec keygen | ds | settime`: the DNSSEC key commands. Output
//! goes to stdout (`ds` prints only records, so it pipes into a parent's
//! zone file or a resolver's trust anchor file); notes go to stderr.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hickory_proto::rr::Name;

use super::args::{DnssecAlg, DnssecCommand, DnssecRole, DsArgs, SettimeArgs, TimingArgs};
use crate::dns::dnssec::keys::{
    self, Algorithm, KeygenSpec, Role, Timing, TimingChange, load_dir_keys,
};
use crate::dns::dnssec::keyset::KeySet;

/// Runs one `cellns dnssec` command.
pub(super) fn run(command: &DnssecCommand) -> anyhow::Result<ExitCode> {
    match command {
        DnssecCommand::Keygen(a) => keygen(a),
        DnssecCommand::Ds(a) => ds(a),
        DnssecCommand::Settime(a) => settime(a),
    }
}

/// A TIME flag, relative to `now`.
fn time(flag: &str, v: &Option<String>, now: u64) -> anyhow::Result<Option<Option<u64>>> {
    v.as_deref()
        .map(|s| keys::parse_time(s, now).with_context(|| format!("--{flag}")))
        .transpose()
}

fn keygen(a: &super::args::DnssecKeygenArgs) -> anyhow::Result<ExitCode> {
    let now = keys::now();
    let t = &a.timing;
    let publish = time("publish", &t.publish, now)?.unwrap_or(Some(now));
    let activate = time("activate", &t.activate, now)?.unwrap_or(publish);
    let spec = KeygenSpec {
        algorithm: match a.algorithm {
            DnssecAlg::EcdsaP256Sha256 => Algorithm::EcdsaP256Sha256,
            DnssecAlg::Ed25519 => Algorithm::Ed25519,
        },
        role: match a.role {
            DnssecRole::Csk => Role::Csk,
            DnssecRole::Ksk => Role::Ksk,
            DnssecRole::Zsk => Role::Zsk,
        },
        timing: Timing {
            created: now,
            publish,
            activate,
            inactive: time("inactive", &t.inactive, now)?.flatten(),
            delete: time("delete", &t.delete, now)?.flatten(),
        },
    };
    let key = keys::keygen(&a.out, &spec)?;
    println!(
        "wrote {} ({} {}, key tag {}, {})",
        key.file().display(),
        key.role(),
        key.algorithm(),
        key.tag(),
        schedule(key.timing())
    );
    Ok(ExitCode::SUCCESS)
}

/// "publish ..., activate ..., ..." for the times that are set.
fn schedule(t: &Timing) -> String {
    let parts: Vec<String> = [
        ("publish", t.publish),
        ("activate", t.activate),
        ("inactive", t.inactive),
        ("delete", t.delete),
    ]
    .into_iter()
    .map(|(n, v)| match v {
        Some(v) => format!("{n} {}", keys::rfc3339(v)),
        None => format!("{n} never"),
    })
    .collect();
    parts.join(", ")
}

/// `cellns dnssec ds`: exit 0 with one DS line a key; 1 when no key
/// should have a DS at that time.
fn ds(a: &DsArgs) -> anyhow::Result<ExitCode> {
    let mut origin = Name::from_ascii(&a.origin)
        .with_context(|| format!("`{}` is not a domain name", a.origin))?;
    origin.set_fqdn(true);
    let origin = origin.to_lowercase();
    let now = keys::now();
    let at = time("at", &a.at, now)?.flatten().unwrap_or(now);
    let keys: Vec<Arc<keys::Key>> = load_dir_keys(&a.dir)?.into_iter().map(Arc::new).collect();
    if keys.is_empty() {
        anyhow::bail!(keys::KeyError::Empty { dir: a.dir.clone() });
    }
    let set = KeySet::evaluate(&keys, at);
    let mut printed = 0;
    for k in &set.ds {
        let Some(ds) = k.ds(&origin) else { continue };
        println!(
            "{} IN DS {} {} 2 {}",
            origin,
            ds.key_tag(),
            k.algorithm().number(),
            hex::encode_upper(ds.digest())
        );
        printed += 1;
    }
    if printed == 0 {
        eprintln!(
            "{}: no key should have a DS at {} (no CSK or KSK is published or active then)",
            a.dir.display(),
            keys::rfc3339(at)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn settime(a: &SettimeArgs) -> anyhow::Result<ExitCode> {
    let now = keys::now();
    let t: &TimingArgs = &a.timing;
    let change = TimingChange {
        publish: time("publish", &t.publish, now)?,
        activate: time("activate", &t.activate, now)?,
        inactive: time("inactive", &t.inactive, now)?,
        delete: time("delete", &t.delete, now)?,
    };
    let key = keys::settime(&a.dir, a.tag, &change)?;
    println!(
        "{}: key tag {} ({} {}): {}; now {}",
        key.file().display(),
        key.tag(),
        key.role(),
        key.algorithm(),
        schedule(key.timing()),
        key.timing().state(now)
    );
    Ok(ExitCode::SUCCESS)
}
