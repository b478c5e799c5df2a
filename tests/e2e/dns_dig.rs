//! DNS answers checked with ISC `dig`, over UDP and TCP: every row of the
//! answer table, and truncation with dig's own TCP retry.

use std::net::SocketAddr;

use hickory_proto::op::ResponseCode;

use crate::support::dns::{Seen, norm};
use crate::support::table::{self as t, BIG_CELL_ADDRS, check_row};

/// A dig response, parsed from its default output.
#[derive(Debug)]
struct Dig {
    seen: Seen,
    /// Whether an OPT pseudosection was printed.
    opt: bool,
    /// Header counts (QUERY, ANSWER, AUTHORITY, ADDITIONAL).
    counts: [usize; 4],
    /// The EDNS line (`; EDNS: version: 0, flags:; udp: 1232`), if any.
    edns_line: Option<String>,
}

/// Runs dig with `opts` and parses its output.
fn dig(server: SocketAddr, opts: &[&str], qname: &str, qtype: &str) -> Dig {
    let text = crate::support::dns::dig(server, opts, qname, qtype);
    parse(&text).unwrap_or_else(|e| panic!("dig {opts:?} {qname} {qtype}: {e}\n{text}"))
}

fn parse(text: &str) -> Result<Dig, String> {
    let mut rcode = None;
    let mut flags: Vec<String> = Vec::new();
    let mut counts = [0usize; 4];
    let mut opt = false;
    let mut edns_line = None;
    let mut sections: [Vec<String>; 3] = Default::default();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<- ") {
            let status = rest
                .split(", ")
                .find_map(|f| f.strip_prefix("status: "))
                .ok_or("no status")?;
            rcode = Some(status.to_owned());
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let (f, c) = rest.split_once(';').ok_or("bad flags line")?;
            flags = f.split_whitespace().map(str::to_owned).collect();
            for (i, key) in ["QUERY: ", "ANSWER: ", "AUTHORITY: ", "ADDITIONAL: "]
                .iter()
                .enumerate()
            {
                let v = c
                    .split(", ")
                    .find_map(|p| p.trim().strip_prefix(key))
                    .ok_or("no count")?;
                counts[i] = v.trim().parse().map_err(|_| "bad count")?;
            }
        } else if line == ";; OPT PSEUDOSECTION:" {
            opt = true;
            current = None;
        } else if line.starts_with("; EDNS:") {
            edns_line = Some(line.to_owned());
        } else if line == ";; ANSWER SECTION:" {
            current = Some(0);
        } else if line == ";; AUTHORITY SECTION:" {
            current = Some(1);
        } else if line == ";; ADDITIONAL SECTION:" {
            current = Some(2);
        } else if line.trim().is_empty() || line.starts_with(';') {
            if line.trim().is_empty() {
                current = None;
            }
        } else if let Some(i) = current {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 || f[2] != "IN" {
                return Err(format!("unexpected record line {line:?}"));
            }
            let ttl = f[1].parse().map_err(|_| format!("bad TTL in {line:?}"))?;
            sections[i].push(norm(f[0], ttl, f[3], &f[4..].join(" ")));
        }
    }
    let rcode = match rcode.ok_or("no header")?.as_str() {
        "NOERROR" => ResponseCode::NoError,
        "FORMERR" => ResponseCode::FormErr,
        "NXDOMAIN" => ResponseCode::NXDomain,
        "NOTIMP" => ResponseCode::NotImp,
        "REFUSED" => ResponseCode::Refused,
        "SERVFAIL" => ResponseCode::ServFail,
        other => return Err(format!("unexpected status {other}")),
    };
    let [answer, authority, additional] = sections;
    Ok(Dig {
        seen: Seen {
            rcode,
            aa: flags.iter().any(|f| f == "aa"),
            ra: flags.iter().any(|f| f == "ra"),
            tc: flags.iter().any(|f| f == "tc"),
            answer,
            authority,
            additional,
        },
        opt,
        counts,
        edns_line,
    })
}

#[test]
fn answer_table_with_dig() {
    let srv = t::start();
    // +nocookie: a bare OPT (the common resolver query, fast path over UDP);
    // dig's default adds a COOKIE option; +noedns sends no OPT at all.
    let modes: [(&str, &[&str]); 4] = [
        ("UDP", &["+nocookie"]),
        ("UDP with COOKIE", &[]),
        ("UDP without EDNS", &["+noedns"]),
        ("TCP", &["+tcp"]),
    ];
    // One thread per mode: dig start-up dominates, the server answers all.
    std::thread::scope(|scope| {
        for (how, opts) in modes {
            let srv = &srv;
            scope.spawn(move || check_table_with_dig(srv.addr(), how, opts));
        }
    });
}

fn check_table_with_dig(server: SocketAddr, how: &str, opts: &[&str]) {
    for row in t::table() {
        let d = dig(server, opts, row.name, &row.qtype.to_string());
        let how = format!("dig over {how}");
        check_row(&row, &how, &d.seen);
        let with_edns = !opts.contains(&"+noedns");
        assert_eq!(d.opt, with_edns, "{how}: {}: OPT iff asked", row.what);
        let opt = usize::from(d.opt);
        assert_eq!(
            d.counts,
            [
                1,
                d.seen.answer.len(),
                d.seen.authority.len(),
                d.seen.additional.len() + opt
            ],
            "{how}: {}: header counts",
            row.what
        );
        if let Some(e) = &d.edns_line {
            assert_eq!(e, "; EDNS: version: 0, flags:; udp: 1232", "{how}");
        }
    }
}

#[test]
fn dig_sees_tc_over_udp_and_the_whole_answer_over_tcp() {
    let srv = t::start();
    let qname = "bigco.cells.example.com.";
    // +ignore: show the truncated UDP response instead of retrying.
    let d = dig(srv.addr(), &["+noedns", "+ignore"], qname, "AAAA");
    assert!(d.seen.tc, "TC over UDP without EDNS: {d:?}");
    assert_eq!(d.counts[1], 0, "no partial answer");
    // dig's default: sees TC and retries over TCP by itself.
    let d = dig(srv.addr(), &["+noedns"], qname, "AAAA");
    assert!(!d.seen.tc);
    assert_eq!(d.seen.answer.len(), BIG_CELL_ADDRS);
    let d = dig(srv.addr(), &["+tcp"], qname, "AAAA");
    assert_eq!(d.seen.answer.len(), BIG_CELL_ADDRS);
    // With 1232 bytes it fits over UDP.
    let d = dig(srv.addr(), &["+bufsize=1232", "+ignore"], qname, "AAAA");
    assert!(!d.seen.tc);
    assert_eq!(d.seen.answer.len(), BIG_CELL_ADDRS);
}
