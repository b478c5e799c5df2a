//! The client side end to end, against the real binary: a client following
//! docs/sdk.md (examples/client.rs) reaches its tenant's cell, follows a
//! move of the tenant with one token refresh, cells refuse tokens for other
//! cells with the wrong-cell signal, and DNS and the token's `cell` claim
//! agree before and after the move.

use std::time::Duration;

use crate::support::client::{WRONG_CELL_STATUS, WrongCell, read_claims};
use crate::support::http::request;
use crate::support::sdk::client_example::Event;
use crate::support::sdk::*;
use crate::support::{RELOAD, wait_until};

fn served_by(e: &Event, cell: &str) -> bool {
    matches!(e, Event::Served { cell: c, .. } if c == cell)
}

#[test]
fn client_follows_a_move_within_one_refresh() {
    let demo = Demo::start();
    let mut client = demo.client(300);
    demo.rt.block_on(async {
        step_until(&mut client, Duration::from_secs(20), |e| served_by(e, A)).await;
        let claims = client.current().expect("a token").claims.clone();
        assert_dns_agrees(&demo.resolver(), &claims, 'a').await;
    });

    demo.move_tenant('b', 2);

    demo.rt.block_on(async {
        let events = step_until(&mut client, Duration::from_secs(20), |e| served_by(e, B)).await;
        // Cell a may serve a few more requests until its view of the map
        // expires (one DNS TTL); then: wrong cell, ONE fetch, cell b.
        let refusal = events
            .iter()
            .position(|e| matches!(e, Event::WrongCell(_)))
            .unwrap_or_else(|| panic!("no wrong-cell signal: {events:#?}"));
        let Event::WrongCell(signal) = &events[refusal] else {
            unreachable!()
        };
        assert_eq!(signal.expected, A, "refused by the old cell");
        assert!(
            events[..refusal].iter().all(|e| served_by(e, A)),
            "before the refusal only cell a serves: {events:#?}"
        );
        let tail: Vec<&Event> = events[refusal + 1..].iter().collect();
        assert!(
            matches!(tail.as_slice(), [Event::Fetched { cell, map_version, .. }, Event::Served { cell: s, .. }]
                if cell == B && map_version == "demo-2" && s == B),
            "after the refusal: one token for b, then served by b: {tail:#?}"
        );
        let claims = client.current().expect("a token").claims.clone();
        assert_dns_agrees(&demo.resolver(), &claims, 'b').await;

        // A client that starts after the move goes to b with its first token.
        let mut fresh = demo.client(300);
        let events = step_until(&mut fresh, Duration::from_secs(20), |e| served_by(e, B)).await;
        assert!(
            matches!(events.as_slice(), [Event::Fetched { cell, .. }, Event::Served { .. }] if cell == B),
            "{events:#?}"
        );
    });
}

#[test]
fn a_token_for_cell_a_is_refused_by_cell_b_with_the_wrong_cell_signal() {
    let demo = Demo::start();
    let token = demo.mint();
    assert_eq!(read_claims(&token).unwrap().cell, A);
    let auth = format!("Bearer {token}");
    let whoami = |c: char| {
        request(
            demo.cell_addr(c),
            "GET",
            "/v1/whoami",
            &[("Authorization", auth.as_str())],
            None,
            false,
        )
    };

    let ok = whoami('a');
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["cell"], A);
    assert_eq!(ok.json()["tenant"], TENANT);

    let refused = whoami('b');
    assert_eq!(refused.status, WRONG_CELL_STATUS, "{}", refused.text());
    assert_eq!(refused.header("content-type"), Some("application/json"));
    assert_eq!(refused.error_code(), "wrong_cell");
    let signal = WrongCell::from_http(refused.status, &refused.body).expect("the signal");
    assert_eq!(signal.expected, B);
    assert_eq!(signal.got, A);

    // After the move, cell a refuses the same (still valid) token once its
    // view of where the tenant lives expires: the tenant left.
    demo.move_tenant('b', 2);
    let mut last = None;
    let refused_by_a = wait_until(RELOAD, || {
        let r = whoami('a');
        let done = r.status == WRONG_CELL_STATUS;
        last = Some(r);
        done
    });
    let last = last.expect("a response");
    assert!(
        refused_by_a,
        "cell a kept serving a moved tenant: {}",
        last.text()
    );
    let signal = WrongCell::from_http(last.status, &last.body).expect("the signal");
    assert_eq!((signal.expected.as_str(), signal.got.as_str()), (A, A));
    // Other refusals are not the signal: a forged token is a 401.
    // (The last base64url character holds the signature's last two bits.)
    let flipped = if token.ends_with('A') { 'Q' } else { 'A' };
    let forged = format!("Bearer {}{flipped}", &token[..token.len() - 1]);
    let r = request(
        demo.cell_addr('b'),
        "GET",
        "/v1/whoami",
        &[("Authorization", forged.as_str())],
        None,
        false,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(WrongCell::from_http(r.status, &r.body).is_none());
}
