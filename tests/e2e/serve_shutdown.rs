//! Graceful shutdown: on SIGTERM `/readyz` turns 503 while everything
//! still serves (for `--shutdown-unready-ms`), then the listeners close,
//! every query a TCP connection has read (pipelined ones included) is
//! answered, a zone transfer under way runs to its end, and the process
//! exits 0.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::dns::{Tcp, Udp, decode, query, rcode_of, wire};
use crate::support::http;
use crate::support::map::{self, MapDir, ORIGIN, generate_spec, generated};
use crate::support::server::Server;
use crate::support::{EXCHANGE, RELOAD, STARTUP, signal, wait_until};

/// Queries sent at once on a connection.
const PIPELINE: usize = 20;

/// What happened to one batch of pipelined queries.
#[derive(Debug, Clone, Copy)]
struct Batch {
    sent: Instant,
    answered: usize,
}

/// A client that sends batches of [`PIPELINE`] queries in one write on one
/// connection and reads the answers, until the connection ends or `stop`.
fn pipelined_client(
    server: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Batch>> {
    std::thread::spawn(move || {
        let mut conn = Tcp::connect(server);
        let mut batches = Vec::new();
        let mut id = 0u16;
        while !stop.load(Ordering::Relaxed) {
            let mut buf = Vec::new();
            for _ in 0..PIPELINE {
                id = id.wrapping_add(1);
                let q = wire(&query(id, &format!("acme.{ORIGIN}"), RecordType::A, None));
                buf.extend_from_slice(&(q.len() as u16).to_be_bytes());
                buf.extend_from_slice(&q);
            }
            let sent = Instant::now();
            if conn.stream().write_all(&buf).is_err() {
                break;
            }
            let mut answered = 0;
            while answered < PIPELINE {
                match conn.recv() {
                    Some(r) if rcode_of(&r) == u16::from(ResponseCode::NoError) => answered += 1,
                    _ => break,
                }
            }
            batches.push(Batch { sent, answered });
            if answered < PIPELINE {
                break;
            }
        }
        batches
    })
}

/// Whether a new TCP connection to `addr` is refused now.
fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

#[test]
fn sigterm_is_unready_first_and_answers_every_pipelined_query_read() {
    let m = MapDir::new(&map::small("v1", 'a').toml(), false);
    let mut s = Server::start(&[
        "--map",
        &m.arg(),
        "--shutdown-unready-ms",
        "1500",
        "--shutdown-grace-ms",
        "5000",
    ]);
    let (dns, web) = (s.dns, s.http());
    assert_eq!(http::get(web, "/readyz").status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| pipelined_client(dns, stop.clone()))
        .collect();
    // Load is flowing.
    let udp = Udp::new(dns);
    for _ in 0..20 {
        udp.ask(&format!("acme.{ORIGIN}"), RecordType::A)
            .expect("answer");
    }

    let term = Instant::now();
    signal(s.pid(), "TERM");
    // 503 while still serving.
    let mut unready_at = None;
    let mut served_while_unready = false;
    assert!(
        wait_until(RELOAD, || {
            let r = http::get(web, "/readyz");
            if r.status == 503 && r.json()["stopping"] == true {
                unready_at.get_or_insert_with(Instant::now);
                served_while_unready = udp
                    .ask_within(&format!("acme.{ORIGIN}"), RecordType::A, EXCHANGE)
                    .is_ok_and(|a| a.rcode == ResponseCode::NoError);
                return true;
            }
            false
        }),
        "/readyz never answered 503 after SIGTERM"
    );
    assert!(served_while_unready, "DNS stopped answering while unready");
    assert!(
        !refused(dns),
        "the TCP listener closed before the unready period ended"
    );
    // Then the listeners close.
    let mut closed_at = None;
    assert!(
        wait_until(RELOAD, || {
            let r = refused(dns);
            if r {
                closed_at = Some(Instant::now());
            }
            r
        }),
        "the DNS TCP listener did not close"
    );
    let (unready_at, closed_at) = (unready_at.expect("503 seen"), closed_at.expect("closed"));
    assert!(unready_at < closed_at);
    assert!(
        closed_at - term >= Duration::from_millis(1400),
        "listeners closed {:?} after SIGTERM, before the 1.5 s unready period",
        closed_at - term
    );

    let status = s.exit_within(STARTUP).expect("no exit after SIGTERM");
    assert!(status.success(), "{status}");
    stop.store(true, Ordering::Relaxed);
    let batches: Vec<Batch> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    // A batch the server read is answered whole; one sent after its last
    // read gets nothing (the connection is closed). Never a part.
    let partial: Vec<&Batch> = batches
        .iter()
        .filter(|b| b.answered != 0 && b.answered != PIPELINE)
        .collect();
    assert!(
        partial.is_empty(),
        "pipelined queries left unanswered: {partial:?} (of {} batches)",
        batches.len()
    );
    let after = batches
        .iter()
        .filter(|b| b.sent > term && b.answered == PIPELINE)
        .count();
    assert!(
        after > 0,
        "no batch was answered after SIGTERM: the load did not run across the shutdown"
    );
    assert!(s.logged("shutting down: reporting unready while still serving"));
    assert!(s.logged(r#""message":"stopped""#));
}

/// Tenants of the transferred zone: its 14 MB do not fit in the socket
/// buffers, so the transfer is really under way when the listeners close.
const XFR_TENANTS: usize = 200_000;

#[test]
fn sigterm_lets_a_zone_transfer_under_way_run_to_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    std::fs::write(
        &path,
        generate_spec(&generated(XFR_TENANTS, 10, 0, "xfr-1")),
    )
    .expect("write the map");
    let mut s = Server::start(&[
        "--map",
        path.to_str().expect("utf-8"),
        "--axfr-allow",
        "127.0.0.1",
        "--shutdown-unready-ms",
        "200",
        "--shutdown-grace-ms",
        "30000",
    ]);
    let dns = s.dns;
    let mut conn = Tcp::connect(dns);
    conn.send(&wire(&query(0x51, ORIGIN, RecordType::AXFR, None)));
    let first = conn.recv().expect("the first message of the transfer");
    let mut records = usize::from(u16::from_be_bytes([first[6], first[7]]));

    // Shutdown while the transfer waits on us: the listener closes...
    signal(s.pid(), "TERM");
    assert!(
        wait_until(RELOAD, || refused(dns)),
        "the DNS TCP listener did not close"
    );
    // ... and the transfer still runs to its end (then the connection
    // closes: nothing more was read on it).
    let mut last = first;
    while let Some(msg) = conn.recv() {
        records += usize::from(u16::from_be_bytes([msg[6], msg[7]]));
        last = msg;
    }
    let ends_with_soa = decode(&last)
        .answers
        .last()
        .is_some_and(|r| r.record_type() == RecordType::SOA);
    assert!(
        ends_with_soa && records > 1,
        "the transfer was cut after {records} records; the server said:\n{}",
        s.logs()
            .text()
            .lines()
            .filter(|l| l.contains("transfer") || l.contains("shutting") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // SOA twice, NS, glue (none in generated maps), 10 cells' names and
    // each tenant's addresses (2 A + 1 AAAA).
    assert!(records > XFR_TENANTS * 3, "{records} records");
    let status = s.exit_within(STARTUP).expect("no exit after the transfer");
    assert!(status.success(), "{status}");
}
