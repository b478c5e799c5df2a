"""Verify a cellns token with PyJWT, an independent JOSE implementation.

usage: pyjwt_verify.py JWKS_URL TOKEN AUDIENCE ISSUER

Fetches the JWKS over HTTP (no proxy: the tests talk to loopback), picks the
key named by the token's kid, and verifies signature, exp, nbf, aud and iss,
allowing only EdDSA and ES256. Prints the claims as JSON and exits 0 when the
token is valid; prints the error and exits 1 when it is not.
"""

import json
import sys
import urllib.request

import jwt


def main() -> int:
    jwks_url, token, audience, issuer = sys.argv[1:5]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(jwks_url, timeout=10) as resp:
        jwks = json.load(resp)
    keyset = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(token).get("kid")
    try:
        key = keyset[kid]
    except KeyError:
        print(f"unknown kid {kid!r}", file=sys.stderr)
        return 1
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=["EdDSA", "ES256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
        )
    except jwt.InvalidTokenError as e:
        print(f"invalid token: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"alg": key.algorithm_name, "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
