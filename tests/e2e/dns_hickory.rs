//! DNS answers checked with hickory's DNS client (`hickory-net`) and with
//! hickory-proto messages sent over raw sockets: the answer table, the case
//! of the question (0x20), EDNS(0), truncation, opcodes, question counts and
//! ANY, each over UDP and TCP.

use std::net::SocketAddr;

use hickory_net::DnsHandle;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::FirstAnswer;
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use crate::support::EXCHANGE;
use crate::support::dns::{self as s, TRANSPORTS, Transport, exchange, name, query, seen};
use crate::support::table::{self as t, BIG_CELL_ADDRS, check_row};

type HickoryClient = Client<TokioRuntimeProvider>;

/// A hickory client over `transport`, its background task spawned.
async fn client(server: SocketAddr, transport: Transport) -> HickoryClient {
    let provider = TokioRuntimeProvider::default();
    let timeout = EXCHANGE;
    match transport {
        Transport::Udp => {
            let conn = UdpClientStream::builder(server, provider)
                .with_timeout(Some(timeout))
                .build();
            let (client, bg) = HickoryClient::from_sender(conn);
            tokio::spawn(bg);
            client
        }
        Transport::Tcp => {
            let (connect, handle) = TcpClientStream::new(server, None, Some(timeout), provider);
            let stream = connect.await.expect("TCP connect");
            let (client, bg) = HickoryClient::with_timeout(stream, handle, timeout);
            tokio::spawn(bg);
            client
        }
    }
}

/// Sends one question with `options` through the hickory client.
async fn ask(
    client: &HickoryClient,
    qname: &str,
    qtype: RecordType,
    options: DnsRequestOptions,
) -> Message {
    let q = hickory_proto::op::Query::query(name(qname), qtype);
    client
        .send(DnsRequest::from_query(q, options))
        .first_answer()
        .await
        .unwrap_or_else(|e| panic!("{qname} {qtype}: {e}"))
        .into_message()
}

#[tokio::test]
async fn answer_table_with_the_hickory_client() {
    let srv = t::start();
    for transport in TRANSPORTS {
        let mut c = client(srv.addr(), transport).await;
        for row in t::table() {
            // RD set (the client's default) must still get RA clear.
            let m = c
                .query(name(row.name), DNSClass::IN, row.qtype)
                .await
                .unwrap_or_else(|e| panic!("{transport:?} {} {}: {e}", row.name, row.qtype))
                .into_message();
            let how = format!("hickory client over {transport:?}");
            check_row(&row, &how, &seen(&m));
            assert!(m.metadata.recursion_desired, "{how}: RD is echoed");
            assert_eq!(m.queries.len(), 1, "{how}: the question is echoed");
            let edns = m.edns.as_ref().expect("the client sends EDNS: OPT echoed");
            assert_eq!(edns.version(), 0);
            assert!(
                edns.max_payload() <= 1232,
                "{how}: payload {}",
                edns.max_payload()
            );
        }
    }
}

#[tokio::test]
async fn mixed_case_question_comes_back_in_its_own_case() {
    let srv = t::start();
    let names = [
        "AcMe.CeLlS.eXaMpLe.CoM.",       // tenant (fast path over UDP)
        "NoBoDy.cElLs.ExAmPlE.cOm.",     // NXDOMAIN
        "CeLLs.ExAmPLE.cOM.",            // apex (general path)
        "uMbReLlA.CELLS.example.COM.",   // CNAME
        "WwW.ExAmPlE.oRg.",              // REFUSED
        "X.Y.Z.aCmE.cElLs.ExAmPlE.cOm.", // deep NXDOMAIN
    ];
    for transport in TRANSPORTS {
        // hickory's own 0x20 check: it randomises the case, and its UDP
        // client ignores a response whose question differs in case (the
        // query then times out).
        let c = client(srv.addr(), transport).await;
        let mut options = DnsRequestOptions::default();
        options.case_randomization = true;
        let m = ask(&c, "acme.cells.example.com.", RecordType::A, options).await;
        assert_eq!(m.answers.len(), 2, "{transport:?}: {m:?}");

        // And byte for byte, for answers of every kind.
        for (i, qname) in names.into_iter().enumerate() {
            for qtype in [RecordType::A, RecordType::TXT] {
                let q = s::wire(&query(0x2000 + i as u16, qname, qtype, Some(1232)));
                let question = &q[12..q.len() - 11]; // header .. OPT
                let r = match transport {
                    Transport::Udp => s::udp_exchange(srv.addr(), &q),
                    Transport::Tcp => s::tcp_exchange(srv.addr(), &q),
                };
                assert_eq!(
                    &r[12..12 + question.len()],
                    question,
                    "{transport:?} {qname} {qtype}: question section bytes"
                );
                let m = s::decode(&r);
                assert_eq!(m.queries[0].name().to_ascii(), qname);
            }
        }
    }
}

#[test]
fn opt_in_the_response_iff_the_query_had_one() {
    let srv = t::start();
    let cases = [
        (
            "acme.cells.example.com.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        (
            "acme.cells.example.com.",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
        (
            "nobody.cells.example.com.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        ("www.example.org.", RecordType::A, ResponseCode::Refused),
        ("cells.example.com.", RecordType::NS, ResponseCode::NoError),
        (
            "acme.cells.example.com.",
            RecordType::ANY,
            ResponseCode::NoError,
        ),
    ];
    for transport in TRANSPORTS {
        for (qname, qtype, rcode) in cases {
            for payload in [
                None,
                Some(100),
                Some(512),
                Some(1232),
                Some(4096),
                Some(65535),
            ] {
                let m = exchange(srv.addr(), transport, &query(7, qname, qtype, payload));
                let how = format!("{transport:?} {qname} {qtype} payload {payload:?}");
                assert_eq!(m.metadata.response_code, rcode, "{how}");
                assert_eq!(m.edns.is_some(), payload.is_some(), "{how}: OPT present");
                if let (Some(e), Some(asked)) = (&m.edns, payload) {
                    assert_eq!(e.version(), 0, "{how}");
                    // Below 512 counts as 512 (RFC 6891 §6.2.5); never above 1232.
                    assert_eq!(
                        e.max_payload(),
                        asked.clamp(512, 1232),
                        "{how}: our payload size"
                    );
                    assert!(!e.flags().dnssec_ok, "{how}: DO clear when asked clear");
                }
            }
        }
    }
}

#[test]
fn do_bit_is_copied_into_the_response() {
    // RFC 3225 §3: "The DO bit of the query MUST be copied in the response."
    let srv = t::start();
    for transport in TRANSPORTS {
        for qname in [
            "acme.cells.example.com.",
            "nobody.cells.example.com.",
            "cells.example.com.",
        ] {
            let mut q = query(8, qname, RecordType::A, Some(1232));
            q.edns.as_mut().expect("edns").set_dnssec_ok(true);
            let m = exchange(srv.addr(), transport, &q);
            let e = m.edns.expect("OPT");
            assert!(e.flags().dnssec_ok, "{transport:?} {qname}: DO copied");
        }
    }
}

#[test]
fn edns_version_1_gets_badvers() {
    let srv = t::start();
    for transport in TRANSPORTS {
        let mut q = query(9, "acme.cells.example.com.", RecordType::A, Some(1232));
        q.edns.as_mut().expect("edns").set_version(1);
        let m = exchange(srv.addr(), transport, &q);
        // 16 is BADVERS in an OPT-bearing response (hickory decodes the
        // shared value 16 as BADSIG, so compare numbers).
        assert_eq!(
            u16::from(m.metadata.response_code),
            16,
            "{transport:?}: {}",
            m.metadata.response_code
        );
        let e = m.edns.as_ref().expect("BADVERS travels in an OPT");
        assert_eq!(e.version(), 0, "we answer with the version we speak");
        assert_eq!(e.rcode_high(), 1, "16 = high 1, low 0");
        assert!(
            m.answers.is_empty() && m.authorities.is_empty(),
            "{transport:?}"
        );
    }
}

#[test]
fn large_answer_truncates_over_udp_and_is_whole_over_tcp() {
    let srv = t::start();
    for qname in ["bigco.cells.example.com.", "big.cells.example.com."] {
        // No EDNS: 512 bytes at most, TC, no partial RRset.
        let q = s::wire(&query(10, qname, RecordType::AAAA, None));
        let r = s::udp_exchange(srv.addr(), &q);
        assert!(
            r.len() <= 512,
            "{qname}: {} bytes over UDP without EDNS",
            r.len()
        );
        let m = s::decode(&r);
        assert!(m.metadata.truncation, "{qname}: TC");
        assert!(m.answers.is_empty(), "{qname}: no partial RRset with TC");
        assert!(m.edns.is_none());
        assert!(m.metadata.authoritative);

        // EDNS 512: the same, with our OPT.
        let r = s::udp_exchange(
            srv.addr(),
            &s::wire(&query(11, qname, RecordType::AAAA, Some(512))),
        );
        assert!(r.len() <= 512);
        let m = s::decode(&r);
        assert!(
            m.metadata.truncation && m.answers.is_empty(),
            "{qname}: {m:?}"
        );
        assert_eq!(m.edns.as_ref().map(Edns::max_payload), Some(512));

        // EDNS 1232: it fits.
        let r = s::udp_exchange(
            srv.addr(),
            &s::wire(&query(12, qname, RecordType::AAAA, Some(1232))),
        );
        assert!(
            r.len() > 512 && r.len() <= 1232,
            "{qname}: {} bytes",
            r.len()
        );
        let m = s::decode(&r);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), BIG_CELL_ADDRS);

        // TCP: the whole answer, with or without EDNS.
        for payload in [None, Some(512)] {
            let m = exchange(
                srv.addr(),
                Transport::Tcp,
                &query(13, qname, RecordType::AAAA, payload),
            );
            assert!(!m.metadata.truncation, "{qname} TCP {payload:?}");
            assert_eq!(m.answers.len(), BIG_CELL_ADDRS, "{qname} TCP {payload:?}");
        }
    }
}

#[tokio::test]
async fn hickory_client_sees_tc_and_gets_the_answer_over_tcp() {
    let srv = t::start();
    let mut options = DnsRequestOptions::default();
    options.use_edns = false;
    let udp = client(srv.addr(), Transport::Udp).await;
    let m = ask(&udp, "bigco.cells.example.com.", RecordType::AAAA, options).await;
    assert!(m.metadata.truncation);
    let tcp = client(srv.addr(), Transport::Tcp).await;
    let m = ask(&tcp, "bigco.cells.example.com.", RecordType::AAAA, options).await;
    assert_eq!(m.answers.len(), BIG_CELL_ADDRS);
}

#[test]
fn unsupported_opcodes_get_notimp() {
    let srv = t::start();
    for transport in TRANSPORTS {
        for opcode in [OpCode::Status, OpCode::Update] {
            for payload in [None, Some(1232)] {
                let mut q = query(14, "cells.example.com.", RecordType::SOA, payload);
                q.metadata.op_code = opcode;
                let m = exchange(srv.addr(), transport, &q);
                let how = format!("{transport:?} {opcode:?} {payload:?}");
                assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "{how}");
                assert_eq!(m.metadata.op_code, opcode, "{how}: opcode echoed");
                assert_eq!(m.edns.is_some(), payload.is_some(), "{how}");
                assert!(m.answers.is_empty(), "{how}");
            }
        }
    }
}

#[test]
fn question_count_other_than_one_is_formerr() {
    let srv = t::start();
    for transport in TRANSPORTS {
        let mut two = query(15, "acme.cells.example.com.", RecordType::A, Some(1232));
        two.add_query(hickory_proto::op::Query::query(
            name("globex.cells.example.com."),
            RecordType::A,
        ));
        let mut none = query(16, "acme.cells.example.com.", RecordType::A, None);
        none.queries.clear();
        for (what, q) in [("two questions", two), ("no question", none)] {
            let m = exchange(srv.addr(), transport, &q);
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::FormErr,
                "{transport:?} {what}"
            );
            assert!(m.answers.is_empty(), "{transport:?} {what}");
        }
        t::assert_alive(srv.addr(), "multi-question queries");
    }
}

#[test]
fn any_is_answered_with_one_rrset() {
    let srv = t::start();
    for transport in TRANSPORTS {
        for (qname, rtype, count) in [
            ("acme.cells.example.com.", RecordType::A, 2),
            ("initech.cells.example.com.", RecordType::A, 1),
            ("umbrella.cells.example.com.", RecordType::CNAME, 1),
            ("bigco.cells.example.com.", RecordType::AAAA, BIG_CELL_ADDRS),
            ("use1-a.cells.example.com.", RecordType::A, 2),
            ("ns1.cells.example.com.", RecordType::A, 1),
            ("cells.example.com.", RecordType::SOA, 1),
        ] {
            let m = exchange(
                srv.addr(),
                transport,
                &query(17, qname, RecordType::ANY, Some(1232)),
            );
            let how = format!("{transport:?} {qname} ANY");
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{how}");
            assert!(
                m.answers.iter().all(|r| r.record_type() == rtype),
                "{how}: one RRset of {rtype}: {:?}",
                m.answers
            );
            assert_eq!(m.answers.len(), count, "{how}: the whole RRset");
            assert!(m.additionals.is_empty(), "{how}");
        }
    }
}

#[test]
fn zone_transfer_not_allowed_is_refused() {
    // No --axfr-allow: a server may refuse transfers it does not
    // authorise (RFC 5936).
    let srv = t::start();
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let m = exchange(
            srv.addr(),
            Transport::Tcp,
            &query(18, "cells.example.com.", qtype, None),
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{qtype}");
        assert!(m.answers.is_empty(), "{qtype}");
    }
}
