//! The command line: its arguments ([`args`], a contract: README,
//! "Commands"), the one-shot commands (`check`, `explain`, `diff`,
//! `keygen`, `verify-token`, `fleet wait`, `gen-map`, `dnssec`), and the
//! `serve` wiring
//! ([`serve`]), which is the only reader of the serve flags: it builds each
//! part's own configuration from them. Output goes to stdout; the exit code
//! is the verdict.

pub mod args;
pub mod budget;
mod diff;
mod dnssec;
mod fleet;
pub mod serve;

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

pub use args::{Cli, Command, LogFormat};

use crate::live::View;
use crate::map::{self, MapError, Snapshot, Status};
use crate::route;
use crate::token::Alg;

/// Runs one command; the returned code is the process's exit code.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("cellns")
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(serve::run(*args, serve::shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { path } => Ok(check(&path)),
        Command::Explain { path, tenant } => explain(&path, &tenant),
        Command::Diff(args) => Ok(diff::run(&args.old, &args.new, args.json)),
        Command::GenMap(args) => gen_map(&args),
        Command::Keygen(args) => keygen(&args),
        Command::VerifyToken(args) => verify_token(&args),
        Command::Fleet(args::FleetCommand::Wait(args)) => fleet::wait(&args),
        Command::Dnssec(args) => dnssec::run(&args.command),
    }
}

/// `cellns gen-map`: a synthetic map on stdout or in a file (written to a
/// temporary file and renamed, so a watching server never sees half of it).
fn gen_map(args: &args::GenMapArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let spec = map::generate::Spec {
        tenants: args.tenants,
        cells: usize::from(args.cells),
        format: if args.json {
            map::Format::Json
        } else {
            map::Format::Toml
        },
        move_every: args.move_every,
        version: args.map_version.clone(),
        allow_mass_change: args.allow_mass_change.clone(),
    };
    let text = map::generate::generate_spec(&spec);
    match &args.out {
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write to stdout")?,
        Some(out) => {
            let name = out.file_name().context("--out must name a file")?;
            let tmp = out.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
            std::fs::write(&tmp, &text)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, out)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path) -> Result<Snapshot, MapError> {
    map::load_file(path)
}

/// `cellns check`: exit 0 and a summary when valid; 1 and every error when not.
fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(snap) => {
            print!("{}", summary(&snap));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A human summary of a snapshot: cells by status, tenants per cell.
pub fn summary(snap: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: valid map, version {}, zone {}, {} cell(s), {} listed tenant(s), unknown tenants: {}",
        snap.source,
        snap.version,
        snap.zone.origin,
        snap.cells.len(),
        snap.tenants.len(),
        snap.placement.as_str()
    );
    for status in Status::ALL {
        let cells: Vec<_> = snap.cells.iter().filter(|c| c.status == status).collect();
        if cells.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{status} ({}):", cells.len());
        for c in cells {
            let mut line = format!(
                "  {:<16} {:<32} {:<16} weight {:<6} {} tenant(s)",
                c.id,
                c.hostname.to_string(),
                if c.region.is_empty() { "-" } else { &c.region },
                c.weight,
                c.listed_tenants
            );
            if c.status == Status::Down {
                let _ = write!(line, ", served by {}", snap.cell(c.serving).id);
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// `cellns explain`: the cell a tenant gets and why, by the map alone (no
/// overrides or health: those live in a running server, see
/// `/v1/tenants/{tenant}`). Exit 1 when the tenant gets no cell.
fn explain(path: &Path, tenant: &str) -> anyhow::Result<ExitCode> {
    let view = View::of_map(std::sync::Arc::new(load(path)?));
    let snap = view.map();
    match route::explain(&view, tenant) {
        Ok(r) => {
            let serving = snap.cell(r.serving);
            let assigned = snap.cell(r.assigned);
            println!("tenant:   {tenant}");
            println!("cell:     {} ({})", serving.id, serving.hostname);
            let why = r.reason(&view);
            println!("why:      {why}");
            if !r.failed_over.is_empty() {
                let chain: Vec<&str> = r
                    .failed_over
                    .iter()
                    .map(|c| snap.cell(*c).id.as_str())
                    .chain(std::iter::once(serving.id.as_str()))
                    .collect();
                println!(
                    "failover: `{}` is down; failed over {}",
                    assigned.id,
                    chain.join(" → ")
                );
            }
            let short = r.planned.is_some_and(|(_, s)| s.short_ttl);
            if let Some((i, state)) = r.planned
                && let Some(m) = snap.moves.get(i)
            {
                let ttl = std::time::Duration::from_secs(u64::from(snap.zone.ttl));
                println!(
                    "move:     {} → {} at {} (now {}; TTL {} s from {} until {})",
                    snap.cell(m.from).id,
                    snap.cell(m.to).id,
                    crate::live::audit::rfc3339(m.at),
                    state.phase.as_str(),
                    snap.zone.move_ttl,
                    crate::live::audit::rfc3339(
                        m.at.checked_sub(ttl).unwrap_or(std::time::UNIX_EPOCH)
                    ),
                    crate::live::audit::rfc3339(m.at + ttl),
                );
            }
            let v4: Vec<String> = serving.ipv4.iter().map(ToString::to_string).collect();
            let v6: Vec<String> = serving.ipv6.iter().map(ToString::to_string).collect();
            if v4.is_empty() && v6.is_empty() {
                println!("dns:      CNAME {}", serving.hostname);
            } else {
                println!(
                    "dns:      A [{}] AAAA [{}] TTL {}",
                    v4.join(", "),
                    v6.join(", "),
                    if short {
                        snap.zone.move_ttl
                    } else {
                        snap.zone.ttl
                    }
                );
            }
            println!("status:   {}, region {}", serving.status, serving.region);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("tenant:   {tenant}");
            println!("cell:     none (NXDOMAIN, no token)");
            println!("why:      {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `cellns keygen`: writes a new signing key; it signs from the next rescan
/// of a running server's key directory (within a second).
fn keygen(args: &args::KeygenArgs) -> anyhow::Result<ExitCode> {
    let alg = match args.alg {
        args::KeyAlg::EdDSA => Alg::EdDSA,
        args::KeyAlg::ES256 => Alg::ES256,
    };
    let (path, kid) = crate::token::keys::keygen(&args.out, alg)?;
    println!("wrote {} ({alg}, kid {kid})", path.display());
    Ok(ExitCode::SUCCESS)
}

/// `cellns verify-token`: verifies a token as the cell `--cell` would, with
/// the keys of `--jwks`. Exit 0 and the claims (JSON) when valid; 1 and the
/// reason when not.
fn verify_token(args: &args::VerifyTokenArgs) -> anyhow::Result<ExitCode> {
    use cellns_client::{Expectations, Verifier, VerifyError};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let expect = Expectations::new(&args.issuer, &args.audience, &args.cell)
        .context("bad --issuer, --audience or --cell")?;
    let result = rt.block_on(async {
        let verifier = Verifier::from_jwks_url(&args.jwks, expect).await?;
        verifier.verify(args.token.trim()).await
    });
    match result {
        Ok(claims) => {
            println!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ VerifyError::Jwks(_)) => Err(e).context("cannot fetch the signing keys"),
        Err(e) => {
            eprintln!("invalid token ({}): {e}", e.code());
            Ok(ExitCode::FAILURE)
        }
    }
}
