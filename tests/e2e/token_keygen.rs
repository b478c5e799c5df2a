//! `cellns keygen` writes keys that standard tools read: OpenSSL 3 and
//! python-cryptography (Ed25519 as PKCS#8 v1; the v2 form they refused).

use std::path::Path;
use std::process::Command;

use crate::support::http::keygen;
use crate::support::{python, require_tool};

/// Loads the private key at `path` with python-cryptography and prints the
/// RFC 7638 thumbprint of its public key: the kid cellns gives it.
const THUMBPRINT_PY: &str = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
if isinstance(key, ed25519.Ed25519PrivateKey):
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": b64(raw)}
else:
    n = key.public_key().public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}
canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
print(b64(hashlib.sha256(canonical).digest()))
"#;

fn openssl_reads(openssl: &Path, key: &Path) {
    let out = Command::new(openssl)
        .args(["pkey", "-in"])
        .arg(key)
        .arg("-noout")
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl pkey cannot read {}: {}",
        key.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn python_thumbprint(key: &Path) -> String {
    let out = Command::new(python())
        .args(["-c", THUMBPRINT_PY])
        .arg(key)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python-cryptography cannot read {}: {}",
        key.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn token_keygen_keys_are_readable_by_openssl_and_python_cryptography() {
    let openssl = require_tool("openssl");
    let dir = tempfile::tempdir().unwrap();
    for alg in ["EdDSA", "ES256"] {
        let (path, kid) = keygen(dir.path(), alg);
        openssl_reads(&openssl, &path);
        // The same key: its public half has the kid cellns publishes.
        assert_eq!(python_thumbprint(&path), kid, "{alg}");
    }
}
