//! `cellns fleet wait`: polls `GET /v1/fleet` until every `--notify`
//! secondary serves at least a serial, the "has my change propagated"
//! answer for deploy pipelines.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;

use super::args::FleetWaitArgs;
use crate::live::serial::serial_gt;

/// Pause between two polls.
const POLL: Duration = Duration::from_millis(500);
/// Longest a single poll may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
struct Fleet {
    serial: u32,
    secondaries: Vec<Secondary>,
}

#[derive(Debug, Deserialize)]
struct Secondary {
    address: String,
    serial: Option<u32>,
    error: Option<String>,
}

/// What one poll found.
enum Poll {
    /// Every secondary serves at least the serial.
    Done(Fleet),
    /// Not yet: what the laggards serve.
    Waiting(String),
}

/// Exit 0 once every secondary serves at least `--serial` (RFC 1982
/// arithmetic); 1 with who lags behind when `--timeout` passes first; an
/// error (exit 1 too) when the API refuses the key.
pub(super) fn wait(args: &FleetWaitArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(wait_async(args))
}

async fn wait_async(args: &FleetWaitArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let url = format!("{}/v1/fleet", args.url.trim_end_matches('/'));
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let mut last;
    loop {
        match poll(&client, &url, args).await? {
            Ok(Poll::Done(f)) => {
                println!(
                    "every secondary ({}) serves serial {} or newer (ours: {})",
                    f.secondaries.len(),
                    args.serial,
                    f.serial
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok(Poll::Waiting(why)) => last = why,
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            eprintln!(
                "timed out after {}s waiting for every secondary to serve serial {}: {last}",
                args.timeout, args.serial
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One poll: `Ok(Err(why))` for what may pass (the API unreachable, a 5xx),
/// `Err` for what will not (the key refused).
async fn poll(
    client: &reqwest::Client,
    url: &str,
    args: &FleetWaitArgs,
) -> anyhow::Result<Result<Poll, String>> {
    let mut req = client.get(url);
    if let Some(key) = &args.api_key {
        req = req.bearer_auth(key.trim());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("cannot reach {url}: {e}"))),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!(
            "{url} answered {status}: give an API key with the read scope (--api-key or CELLNS_API_KEY): {body}"
        );
    }
    if !status.is_success() {
        return Ok(Err(format!("{url} answered {status}")));
    }
    let fleet: Fleet = match resp.json().await {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("{url}: unexpected body: {e}"))),
    };
    let behind: Vec<String> = fleet
        .secondaries
        .iter()
        .filter(|s| {
            !s.serial
                .is_some_and(|v| v == args.serial || serial_gt(v, args.serial))
        })
        .map(|s| match (s.serial, &s.error) {
            (Some(v), _) => format!("{} serves {v}", s.address),
            (None, Some(e)) => format!("{} ({e})", s.address),
            (None, None) => format!("{} (not checked yet)", s.address),
        })
        .collect();
    if behind.is_empty() {
        Ok(Ok(Poll::Done(fleet)))
    } else {
        Ok(Ok(Poll::Waiting(format!(
            "our serial is {}; behind: {}",
            fleet.serial,
            behind.join(", ")
        ))))
    }
}
