//! The shared SDK test vectors (`sdk/vectors/*.json`, contract in
//! `sdk/vectors/README.md`), run against this crate as the Python and
//! TypeScript SDKs run them, so the three implementations cannot drift.
//!
//! Every case of every file is checked. A test collects all the failures of
//! its file before failing, each naming the file and the case, so one run
//! shows every disagreement. A vector of an unexpected shape is a failure
//! too (it would otherwise be skipped without anyone noticing).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cellns_client::{
    Action, Backoff, ClaimsError, Expectations, GRPC_WRONG_CELL_STATUS, PublicKeySet, Refresher,
    SplitMix64, WRONG_CELL_STATUS, WrongCell, read_claims, refresh_lead,
};
use serde_json::{Value, json};

/// The failures of one file, each "file: case: what".
struct Report {
    file: &'static str,
    checked: usize,
    failures: Vec<String>,
}

impl Report {
    fn new(file: &'static str) -> Self {
        Self {
            file,
            checked: 0,
            failures: Vec::new(),
        }
    }

    /// Records the outcome of one case.
    fn case(&mut self, name: &str, outcome: Result<(), String>) {
        self.checked += 1;
        if let Err(e) = outcome {
            self.failures.push(format!("{}: {name}: {e}", self.file));
        }
    }

    /// Fails the test listing every failure; also if no case ran.
    fn finish(self) {
        assert!(self.checked > 0, "{}: no case was checked", self.file);
        assert!(
            self.failures.is_empty(),
            "{} of {} cases failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
    }
}

/// `sdk/vectors/<name>`, parsed.
fn load(name: &str) -> Value {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "sdk",
        "vectors",
        name,
    ]
    .iter()
    .collect();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// The array `key` of `doc` (a vector file without it is broken).
fn array<'a>(doc: &'a Value, file: &str, key: &str) -> &'a [Value] {
    doc.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{file}: no array {key:?}"))
}

// Field readers: a vector of the wrong shape is the case's failure.

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("vector has no {key:?}"))
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| format!("vector's {key:?} is not a string"))
}

fn uint(v: &Value, key: &str) -> Result<u64, String> {
    field(v, key)?
        .as_u64()
        .ok_or_else(|| format!("vector's {key:?} is not an unsigned integer"))
}

/// An unsigned 64-bit number written as a decimal string (README: seeds
/// and raw outputs are strings, JavaScript numbers cannot hold them).
fn u64_string(v: &Value, key: &str) -> Result<u64, String> {
    text(v, key)?
        .parse()
        .map_err(|e| format!("vector's {key:?} is not a u64: {e}"))
}

fn float(v: &Value, key: &str) -> Result<f64, String> {
    field(v, key)?
        .as_f64()
        .ok_or_else(|| format!("vector's {key:?} is not a number"))
}

fn name_of(v: &Value, index: usize) -> String {
    match v.get("name").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => format!("#{index}"),
    }
}

/// `Err` describing the difference when `got != want`.
fn same<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

// ---------------------------------------------------------------------------
// tokens.json: the verifier.

/// The expectations of a case: the file's defaults, with the case's own
/// `expect` members replacing them.
fn expectations(defaults: &Value, case: &Value) -> Result<Expectations, String> {
    let mut e = defaults.clone();
    if let Some(over) = case.get("expect") {
        let over = over
            .as_object()
            .ok_or("vector's \"expect\" is not an object")?;
        for (k, v) in over {
            e[k] = v.clone();
        }
    }
    let (leeway, max_lifetime) = (uint(&e, "leeway")?, uint(&e, "max_lifetime")?);
    Expectations::new(
        text(&e, "issuer")?,
        text(&e, "audience")?,
        text(&e, "cell")?,
    )
    .and_then(|x| x.with_leeway_secs(leeway))
    .and_then(|x| x.with_max_lifetime_secs(max_lifetime))
    .map_err(|err| format!("expectations {e}: {err}"))
}

#[test]
fn tokens() {
    let file = "tokens.json";
    let doc = load(file);
    let now = doc["now"]
        .as_u64()
        .unwrap_or_else(|| panic!("{file}: no integer \"now\""));
    let keys = PublicKeySet::from_jwks(doc["jwks"].to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{file}: the key set \"jwks\" does not parse: {e}"));
    let mut report = Report::new(file);
    for (i, case) in array(&doc, file, "cases").iter().enumerate() {
        let outcome = (|| {
            let expect = expectations(&doc["expect"], case)?;
            let got = keys.verify_at(text(case, "token")?, &expect, now);
            match (text(case, "verdict")?, got) {
                ("valid", Ok(claims)) => {
                    let claims = serde_json::to_value(&claims).map_err(|e| e.to_string())?;
                    same("claims", &claims, field(case, "claims")?)
                }
                ("valid", Err(e)) => Err(format!("refused ({}): {e}", e.code())),
                (code, Ok(_)) => Err(format!("accepted, want {code}")),
                (code, Err(e)) => same("verdict", e.code(), code).map_err(|m| format!("{m} ({e})")),
            }
        })();
        report.case(&name_of(case, i), outcome);
    }
    report.finish();
}

// ---------------------------------------------------------------------------
// jwks.json: reading a key set.

#[test]
fn jwks() {
    let file = "jwks.json";
    let doc = load(file);
    let mut report = Report::new(file);
    for (i, case) in array(&doc, file, "cases").iter().enumerate() {
        let outcome = (|| {
            let got = PublicKeySet::from_jwks(text(case, "document")?.as_bytes());
            match (case.get("keys"), got) {
                (Some(want), Ok(set)) => {
                    let got: serde_json::Map<String, Value> = set
                        .kids()
                        .map(|kid| (kid.to_owned(), json!(set.algorithm(kid))))
                        .collect();
                    same("keys {kid: alg}", &Value::Object(got), want)
                }
                (Some(_), Err(e)) => Err(format!("refused: {e}")),
                (None, Ok(set)) => Err(format!(
                    "accepted with keys {:?}, want {}",
                    set.kids().collect::<Vec<_>>(),
                    text(case, "error")?
                )),
                (None, Err(e)) => same("error", e.code(), text(case, "error")?),
            }
        })();
        report.case(&name_of(case, i), outcome);
    }
    report.finish();
}

// ---------------------------------------------------------------------------
// claims.json: reading a token without verifying it.

/// The README's class of a [`ClaimsError`], one variant per class (a
/// lifetime beyond the client's 30 days is a value a client must not use).
fn claims_class(e: &ClaimsError) -> &'static str {
    match e {
        ClaimsError::NotJwt(_) => "not_jwt",
        ClaimsError::Payload(_) => "payload",
        ClaimsError::Invalid { .. } | ClaimsError::LifetimeTooLong { .. } => "invalid",
        _ => "(a variant this test does not know)",
    }
}

#[test]
fn claims() {
    let file = "claims.json";
    let doc = load(file);
    let mut report = Report::new(file);
    for (i, case) in array(&doc, file, "cases").iter().enumerate() {
        let outcome = (|| {
            let got = read_claims(text(case, "token")?);
            match (case.get("claims"), got) {
                (Some(want), Ok(c)) => {
                    let got = json!({
                        "tenant": c.tenant, "cell": c.cell, "iat": c.iat, "exp": c.exp,
                        "map_version": c.map_version,
                    });
                    same("claims", &got, want)
                }
                (Some(_), Err(e)) => Err(format!("refused ({}): {e}", claims_class(&e))),
                (None, Ok(c)) => Err(format!("accepted as {c:?}, want {}", text(case, "error")?)),
                (None, Err(e)) => same("error", claims_class(&e), text(case, "error")?)
                    .map_err(|m| format!("{m} ({e})")),
            }
        })();
        report.case(&name_of(case, i), outcome);
    }
    report.finish();
}

// ---------------------------------------------------------------------------
// wrong_cell.json: the signal.

/// A signal as the vectors write it: `null` or the fields that are given.
fn signal_json(w: Option<WrongCell>, fields: &[&str]) -> Value {
    let Some(w) = w else { return Value::Null };
    let all = json!({"expected": w.expected, "got": w.got, "message": w.message});
    Value::Object(
        fields
            .iter()
            .map(|f| ((*f).to_owned(), all[*f].clone()))
            .collect(),
    )
}

#[test]
fn wrong_cell() {
    let file = "wrong_cell.json";
    let doc = load(file);
    let mut report = Report::new(file);
    for (i, case) in array(&doc, file, "http").iter().enumerate() {
        let outcome = (|| {
            let status = u16::try_from(uint(case, "status")?).map_err(|e| e.to_string())?;
            let got = WrongCell::from_http(status, text(case, "body")?.as_bytes());
            let got = signal_json(got, &["expected", "got", "message"]);
            same("signal", &got, field(case, "signal")?)
        })();
        report.case(&format!("http[{}]", name_of(case, i)), outcome);
    }
    for (i, case) in array(&doc, file, "grpc").iter().enumerate() {
        let outcome = (|| {
            let code = u32::try_from(uint(case, "code")?).map_err(|e| e.to_string())?;
            let pairs = field(case, "trailers")?
                .as_array()
                .ok_or("vector's \"trailers\" is not an array")?
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), Value::String(v)]) => Ok((k.as_str(), v.as_str())),
                    _ => Err(format!("trailer {p} is not a [key, value] pair of strings")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let got = WrongCell::from_grpc(code, pairs, "");
            same(
                "signal",
                &signal_json(got, &["expected"]),
                field(case, "signal")?,
            )
        })();
        report.case(&format!("grpc[{}]", name_of(case, i)), outcome);
    }
    for (i, case) in array(&doc, file, "make").iter().enumerate() {
        let outcome = (|| {
            let w = WrongCell::new(text(case, "expected")?, text(case, "got")?);
            same(
                "status",
                u64::from(WRONG_CELL_STATUS),
                uint(case, "status")?,
            )?;
            let body: Value = serde_json::from_slice(&w.http_body()).map_err(|e| e.to_string())?;
            same("body", &body, field(case, "body")?)?;
            let grpc = field(case, "grpc")?;
            same(
                "grpc code",
                u64::from(GRPC_WRONG_CELL_STATUS),
                uint(grpc, "code")?,
            )?;
            let (key, value) = w.grpc_trailer();
            same(
                "grpc trailer",
                &json!([key, value]),
                field(grpc, "trailer")?,
            )?;
            same("grpc message", w.grpc_message(), text(grpc, "message")?)
        })();
        let name = format!(
            "make[{i}: {:?} refusing {:?}]",
            case["expected"].as_str().unwrap_or("?"),
            case["got"].as_str().unwrap_or("?")
        );
        report.case(&name, outcome);
    }
    report.finish();
}

// ---------------------------------------------------------------------------
// backoff.json: jitter, backoff and the refresh rule.

fn backoff_of(v: &Value) -> Result<Backoff, String> {
    Ok(Backoff {
        initial_ms: uint(v, "initial_ms")?,
        max_ms: uint(v, "max_ms")?,
    })
}

fn attempt(v: &Value) -> Result<u32, String> {
    u32::try_from(uint(v, "n")?).map_err(|_| "vector's \"n\" is above u32::MAX".to_owned())
}

#[test]
fn backoff_splitmix64() {
    let file = "backoff.json";
    let doc = load(file);
    let mut report = Report::new(file);
    for (i, case) in array(&doc, file, "splitmix64").iter().enumerate() {
        let outcome = (|| {
            let mut rng = SplitMix64::new(u64_string(case, "seed")?);
            let outputs = field(case, "outputs")?
                .as_array()
                .ok_or("vector's \"outputs\" is not an array")?;
            if outputs.is_empty() {
                return Err("no outputs".into());
            }
            for (k, want) in outputs.iter().enumerate() {
                let want: u64 = want
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("output {k} is not a decimal u64 string"))?;
                same(&format!("output {k}"), rng.next_u64(), want)?;
            }
            Ok(())
        })();
        report.case(&format!("splitmix64[{i}]"), outcome);
    }
    report.finish();
}

#[test]
fn backoff_sequences() {
    let file = "backoff.json";
    let doc = load(file);
    let mut report = Report::new(file);
    for (i, case) in array(&doc, file, "sequences").iter().enumerate() {
        let outcome = (|| {
            let mut rng = SplitMix64::new(u64_string(case, "seed")?);
            let backoff = backoff_of(case)?;
            let attempts = field(case, "attempts")?
                .as_array()
                .ok_or("vector's \"attempts\" is not an array")?;
            if attempts.is_empty() {
                return Err("no attempts".into());
            }
            for (k, a) in attempts.iter().enumerate() {
                // One draw per attempt, in order; n counts from 1.
                let n = attempt(a)?;
                same(&format!("attempt {k}: n"), u64::from(n), k as u64 + 1)?;
                let jitter = rng.next_jitter();
                same(&format!("n = {n}: jitter"), jitter, float(a, "jitter")?)?;
                same(
                    &format!("n = {n}: delay_ms"),
                    backoff.delay_ms(n, jitter),
                    uint(a, "delay_ms")?,
                )?;
                same(
                    &format!("n = {n}: delay"),
                    backoff.delay(n, jitter),
                    Duration::from_millis(uint(a, "delay_ms")?),
                )?;
            }
            Ok(())
        })();
        report.case(&format!("sequences[{i}]"), outcome);
    }
    report.finish();
}

#[test]
fn backoff_delays() {
    let file = "backoff.json";
    let doc = load(file);
    let mut report = Report::new(file);
    for (i, case) in array(&doc, file, "delays").iter().enumerate() {
        let outcome = (|| {
            let got = backoff_of(case)?.delay_ms(attempt(case)?, float(case, "jitter")?);
            same("delay_ms", got, uint(case, "delay_ms")?)
        })();
        let name = format!(
            "delays[{i}: n = {}, jitter = {}]",
            case["n"], case["jitter"]
        );
        report.case(&name, outcome);
    }
    report.finish();
}

#[test]
fn backoff_refresh_lead() {
    let file = "backoff.json";
    let doc = load(file);
    let mut report = Report::new(file);
    for (i, case) in array(&doc, file, "refresh_lead").iter().enumerate() {
        let outcome = (|| {
            let lead = refresh_lead(Duration::from_secs(uint(case, "lifetime_s")?));
            same("lead", lead, Duration::from_millis(uint(case, "lead_ms")?))
        })();
        let name = format!("refresh_lead[{i}: {} s]", case["lifetime_s"]);
        report.case(&name, outcome);
    }
    report.finish();
}

/// What [`Refresher::next`] said, as the vectors write it, with instants
/// as milliseconds after `base`.
fn action_json(a: Action<'_>, base: Instant) -> Value {
    match a {
        Action::Fetch => json!({"action": "fetch"}),
        Action::Sleep(until) => match until.checked_duration_since(base) {
            Some(d) if d.subsec_nanos() % 1_000_000 == 0 => {
                json!({"action": "sleep", "until_ms": d.as_millis() as u64})
            }
            // Not a whole millisecond after the start: cannot match.
            _ => json!({"action": "sleep", "until": format!("{until:?}")}),
        },
        Action::Send(c) => json!({"action": "send", "cell": c.claims.cell, "token": c.token}),
    }
}

/// Runs one refresher script; the first step that disagrees ends it (the
/// later steps assume the earlier ones).
fn run_script(script: &Value) -> Result<(), String> {
    // now_ms is on a monotonic clock: a base instant plus the offset.
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    let mut r = Refresher::with_seed(backoff_of(script)?, u64_string(script, "seed")?);
    let steps = field(script, "steps")?
        .as_array()
        .ok_or("vector's \"steps\" is not an array")?;
    if steps.is_empty() {
        return Err("no steps".into());
    }
    for (k, step) in steps.iter().enumerate() {
        let outcome = (|| {
            let now = at(uint(step, "now_ms")?);
            match text(step, "op")? {
                "next" => same(
                    "next",
                    &action_json(r.next(now), base),
                    field(step, "expect")?,
                ),
                "fetched" => {
                    let ok = field(step, "ok")?
                        .as_bool()
                        .ok_or("vector's \"ok\" is not a boolean")?;
                    match (r.fetched(now, text(step, "token")?.to_owned()), ok) {
                        (Ok(_), true) | (Err(_), false) => Ok(()),
                        (Ok(c), false) => Err(format!("token accepted as {:?}", c.claims)),
                        (Err(e), true) => Err(format!("token refused: {e}")),
                    }
                }
                "fetch_failed" => {
                    r.fetch_failed(now);
                    Ok(())
                }
                "served" => {
                    r.served(now);
                    Ok(())
                }
                "refused" => {
                    r.refused(now);
                    Ok(())
                }
                op => Err(format!("unknown op {op:?}")),
            }
        })();
        outcome.map_err(|e| {
            format!(
                "step {k} ({} at {} ms): {e}",
                step["op"].as_str().unwrap_or("?"),
                step["now_ms"]
            )
        })?;
    }
    Ok(())
}

#[test]
fn backoff_refresher() {
    let file = "backoff.json";
    let doc = load(file);
    let mut report = Report::new(file);
    for (i, script) in array(&doc, file, "refresher").iter().enumerate() {
        report.case(
            &format!("refresher[{}]", name_of(script, i)),
            run_script(script),
        );
    }
    report.finish();
}
