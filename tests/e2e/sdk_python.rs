//! The Python snippet of docs/sdk.md, extracted from the page and run
//! (tests/sdk_snippet.py) against cellns and the two cells: it reads the
//! claims of a real token and, holding a token for the tenant's old cell,
//! is refused with the wrong-cell signal and reaches the new cell with one
//! new token.

use std::process::Command;

use crate::support::http::KEY;
use crate::support::sdk::*;
use crate::support::{python, repo};

/// The code block that follows the "tested" marker in docs/sdk.md.
fn snippet() -> String {
    let page = std::fs::read_to_string(repo().join("docs/sdk.md")).unwrap();
    let marker = "<!-- tested: the block below is run by tests/e2e/sdk_python.rs -->";
    let rest = &page[page.find(marker).expect("the tested marker in docs/sdk.md") + marker.len()..];
    let body = rest
        .trim_start()
        .strip_prefix("```python\n")
        .expect("a ```python block right after the marker");
    body[..body.find("\n```").expect("the end of the block")].to_owned()
}

#[test]
fn python_snippet_follows_a_move() {
    let demo = Demo::start();
    let stale = demo.mint();
    demo.move_tenant('b', 2);

    // The cells' names, resolved through cellns as a client's resolver would.
    let resolver = demo.resolver();
    let mut hosts = serde_json::Map::new();
    for name in [A, B] {
        let l = demo.rt.block_on(resolver.lookup(name)).unwrap();
        hosts.insert(name.into(), l.addrs[0].to_string().into());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sdk.py");
    std::fs::write(&file, snippet()).unwrap();

    let out = Command::new(python())
        .arg(repo().join("tests/sdk_snippet.py"))
        .arg(&file)
        .arg(format!("http://{}", demo.http()))
        .args([KEY, TENANT, &demo.port.to_string()])
        .arg(serde_json::Value::Object(hosts).to_string())
        .arg(&stale)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["stale_claims"]["cell"], A, "{report}");
    assert_eq!(report["stale_claims"]["tenant"], TENANT);
    assert_eq!(report["stale_claims"]["map_version"], "demo-1");
    // The stale token, refused by cell a, then exactly one new token.
    assert_eq!(report["fetches"], 2, "{report}");
    assert_eq!(report["served_by"], B, "{report}");
    assert_eq!(report["served_again_by"], B, "{report}");
    assert_eq!(report["current_cell"], B);
    assert_eq!(report["unserved"], 0, "served: the backoff starts over");
}
