//! Token micro benchmarks: minting (the work of one `POST /v1/tokens` minus
//! HTTP) and verifying, for EdDSA and ES256, on one core.
//!
//! `cargo bench --bench tokens`. tokens/s per core = 1 / time per iteration.
//! The HTTP load test (tokens/s and p99 through the real server) is
//! `benches/token-load.sh`.

use std::sync::Arc;

use cellns::token::keys::KeySet;
use cellns::token::{Alg, Issuer, IssuerConfig, KeyRing, SigningKey, TokenRequest};
use cellns_client::{Expectations, PublicKeySet};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let snap =
        cellns::live::View::of_map(Arc::new(cellns::map::load_example().expect("example map")));
    let req = TokenRequest {
        tenant: "acme".into(),
        subject: "user-42".into(),
        ttl_seconds: 900,
        claims: None,
    };
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    for alg in [Alg::EdDSA, Alg::ES256] {
        let key = Arc::new(SigningKey::generate(alg));
        let issuer = Issuer::new(
            IssuerConfig {
                issuer: "cellns".into(),
                audience: "cells".into(),
                max_ttl: 3600,
            },
            Arc::new(KeyRing::fixed(vec![key.clone()])),
        );
        let now = 1_800_000_000;
        g.bench_function(format!("issue/{alg}"), |b| {
            b.iter(|| issuer.issue(&snap, &req, now).expect("issue"))
        });
        let keys = PublicKeySet::from_jwks(KeySet::new(vec![key.clone()]).jwks_json())
            .expect("the JWKS of our own key");
        let expect =
            Expectations::new("cellns", "cells", "use1-a.cells.example.com").expect("expectations");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let token = issuer.issue(&snap, &req, now).expect("issue").token;
        g.bench_function(format!("verify/{alg}"), |b| {
            b.iter(|| keys.verify(&token, &expect).expect("verify"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
