//! The seed corpus of each target (the fuzzer starts from these and
//! mutates): DNS queries of every kind the server answers, the example map
//! in TOML and JSON, valid tokens of both algorithms and the fixture JWKS.

use std::path::Path;
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn query(name: &str, t: RecordType, edns: Option<bool>, op: OpCode) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, op);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).expect("name"), t));
    if let Some(dnssec_ok) = edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

/// Writes the seeds of `target` into `dir`.
pub fn write_seeds(target: &str, dir: &Path) {
    match target {
        "dns_datagram" => dns(dir),
        "map_parse" => map(dir),
        "verify_token" => tokens(dir),
        other => panic!("no seeds for {other}"),
    }
}

fn dns(dir: &Path) {
    let z = "cells.example.com.";
    let names = [
        format!("acme.{z}"),
        format!("AcMe.{z}"),
        format!("umbrella.{z}"),
        format!("nobody.{z}"),
        format!("deep.acme.{z}"),
        format!("use1-a.{z}"),
        format!("ns1.{z}"),
        z.to_owned(),
        "www.example.org.".to_owned(),
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::SOA,
        RecordType::NS,
        RecordType::ANY,
        RecordType::AXFR,
        RecordType::IXFR,
        RecordType::CAA,
    ];
    let mut i = 0;
    for name in &names {
        for t in types {
            for edns in [None, Some(false), Some(true)] {
                let mut bytes = vec![(i % 2) as u8];
                bytes.extend(query(name, t, edns, OpCode::Query));
                write(dir, &format!("q{i:04}"), &bytes);
                i += 1;
            }
        }
    }
    for op in [OpCode::Notify, OpCode::Update, OpCode::Status] {
        let mut bytes = vec![0u8];
        bytes.extend(query(z, RecordType::SOA, Some(false), op));
        write(dir, &format!("op{}", u8::from(op)), &bytes);
    }
    // An EDNS option (a cookie), which only the general path reads.
    let mut cookie = vec![0u8];
    let mut q = query(&names[0], RecordType::A, None, OpCode::Query);
    q[11] = 1;
    q.extend([0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8]);
    q.extend([1, 2, 3, 4, 5, 6, 7, 8]);
    cookie.extend(q);
    write(dir, "cookie", &cookie);
}

fn map(dir: &Path) {
    let toml = cellns::map::EXAMPLE_MAP;
    let mut t = vec![0u8];
    t.extend(toml.as_bytes());
    write(dir, "example.toml", &t);
    let value: toml::Value = toml::from_str(toml).expect("the example map is TOML");
    let mut j = vec![1u8];
    j.extend(serde_json::to_vec_pretty(&value).expect("JSON"));
    write(dir, "example.json", &j);
}

fn tokens(dir: &Path) {
    let payload = |iat: u64, ttl: u64| {
        serde_json::json!({
            "iss": "cellns", "aud": "cells", "sub": "u", "iat": iat, "nbf": iat,
            "exp": iat + ttl, "jti": "j", "tenant": "acme", "cell": crate::CELL,
            "cell_id": "use1-a", "region": "us-east-1", "map_version": "v"
        })
    };
    for kid in ["ed", "ec"] {
        let mut b = vec![0u8];
        b.extend(crate::sign(kid, &payload(crate::NOW, 600)).as_bytes());
        write(dir, &format!("token-{kid}"), &b);
    }
    let mut b = vec![b'J'];
    b.extend(crate::jwks().as_bytes());
    write(dir, "jwks", &b);
}
