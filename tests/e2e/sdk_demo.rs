//! examples/demo.sh, run as written (non-interactive, debug build so it
//! reuses this test run's build): it must show the client following the
//! tenant from cell a to cell b with one new token, and exit 0, both when
//! the map's tenant line is rewritten and when the move is scheduled.

use std::process::Command;

use crate::support::{repo, require_tool};

#[test]
fn demo_script_runs_and_the_client_follows() {
    let stdout = run_demo(&[]);
    assert!(
        stdout.contains("moving acme from cell a to cell b (map demo-2)"),
        "{stdout}"
    );
}

#[test]
fn demo_script_schedules_the_move_and_the_client_follows() {
    let stdout = run_demo(&["--scheduled"]);
    assert!(
        stdout.contains("moving acme from cell a to cell b: scheduled at"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cellns: acme's move is loaded, phase scheduled"),
        "{stdout}"
    );
}

/// Runs the demo with `extra` arguments; checks the client's story and
/// returns what it printed.
fn run_demo(extra: &[&str]) -> String {
    require_tool("sha256sum");
    require_tool("curl");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new("bash");
    // Cargo sets these for test processes. Build scripts (ring's) rerun
    // when they change, so a nested build that inherits them would rebuild
    // half the dependency tree, twice (for it and for the next test run).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let per_test = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ];
        if per_test.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(&*k);
        }
    }
    let out = cmd
        .arg(repo().join("examples/demo.sh"))
        .arg("--non-interactive")
        .args(extra)
        .env("DEMO_PROFILE", "dev")
        .env("DEMO_TIMEOUT", "120")
        // The script calls `cargo build`; use the cargo running the tests.
        .env(
            "PATH",
            std::env::join_paths(
                std::path::Path::new(&cargo)
                    .parent()
                    .into_iter()
                    .map(|p| p.to_path_buf())
                    .chain(std::env::split_paths(
                        &std::env::var_os("PATH").unwrap_or_default(),
                    )),
            )
            .unwrap(),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run examples/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let served_a = stdout.find("served   by a.cells.demo.test").expect(&stdout);
    let moving = stdout
        .find("moving acme from cell a to cell b")
        .expect(&stdout);
    let refused = stdout
        .rfind("refused  by a.cells.demo.test: wrong_cell")
        .expect(&stdout);
    let served_b = stdout.find("served   by b.cells.demo.test").expect(&stdout);
    assert!(
        served_a < moving && moving < refused && refused < served_b,
        "{stdout}"
    );
    assert!(
        stdout.contains("the client followed with 1 new token(s)"),
        "{stdout}"
    );
    stdout.into_owned()
}
