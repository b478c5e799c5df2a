//! The wrong-cell signal cells send and clients act on: [`WrongCell`].

use serde::{Deserialize, Serialize};

use crate::host::canonical_host;

/// The HTTP status of the wrong-cell signal: 421 Misdirected Request
/// (RFC 9110 §15.5.20: this server will not answer for that request).
pub const WRONG_CELL_STATUS: u16 = 421;
/// The `error.code` of the wrong-cell signal (the same code the
/// [`crate::VerifyError::WrongCell`] error has).
pub const WRONG_CELL_CODE: &str = "wrong_cell";
/// gRPC form: the status code, `FAILED_PRECONDITION` (9).
pub const GRPC_WRONG_CELL_STATUS: u32 = 9;
/// gRPC form: the trailing metadata key whose presence (with status
/// [`GRPC_WRONG_CELL_STATUS`]) is the signal. Its value is this cell's
/// hostname.
pub const GRPC_WRONG_CELL_TRAILER: &str = "cellns-wrong-cell";
/// Largest body [`WrongCell::from_http`] parses. A cell's signal is under
/// 1 KiB; a larger 421 body is something else, and not worth parsing.
pub const MAX_SIGNAL_BODY: usize = 64 * 1024;

/// The wrong-cell signal: "this cell does not serve this tenant; get a new
/// token and connect to the cell it names". A cell sends it when the
/// token's `cell` claim is another cell, or when the tenant has moved away
/// from it. Over HTTP it is status 421 with the JSON body
/// `{"error": {"code": "wrong_cell", "message": ..., "expected": ..., "got": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrongCell {
    /// The hostname of the cell that refused (the cell a token must name
    /// to be accepted here).
    pub expected: String,
    /// The `cell` claim of the refused token.
    pub got: String,
    /// For people.
    pub message: String,
}

#[derive(Serialize)]
struct WrongCellBody {
    error: WrongCellError,
}

#[derive(Serialize)]
struct WrongCellError {
    code: String,
    message: String,
    expected: String,
    got: String,
}

impl WrongCell {
    /// The signal of cell `expected` refusing a token for cell `got`.
    pub fn new(expected: &str, got: &str) -> Self {
        let (expected, got) = (canonical_host(expected), canonical_host(got));
        let message = if expected == got {
            format!("the tenant is no longer served by {expected}: get a new token")
        } else {
            format!("this is {expected}, the token is for {got}: get a new token")
        };
        Self {
            expected,
            got,
            message,
        }
    }

    /// The JSON body of the HTTP form (send it with status
    /// [`WRONG_CELL_STATUS`] and `Content-Type: application/json`).
    pub fn http_body(&self) -> Vec<u8> {
        let body = WrongCellBody {
            error: WrongCellError {
                code: WRONG_CELL_CODE.to_owned(),
                message: self.message.clone(),
                expected: self.expected.clone(),
                got: self.got.clone(),
            },
        };
        // Serialising four strings cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The status message of the gRPC form (send it with status
    /// [`GRPC_WRONG_CELL_STATUS`] and [`WrongCell::grpc_trailer`]).
    pub fn grpc_message(&self) -> &str {
        &self.message
    }

    /// The trailing metadata of the gRPC form: the key
    /// [`GRPC_WRONG_CELL_TRAILER`] and this cell's hostname.
    pub fn grpc_trailer(&self) -> (&'static str, &str) {
        (GRPC_WRONG_CELL_TRAILER, &self.expected)
    }

    /// The signal in an HTTP response, if it is one: status 421 **and** a
    /// JSON object body (at most [`MAX_SIGNAL_BODY`] bytes) whose `error` is
    /// an object with `code` exactly `"wrong_cell"`. A 421 without that code
    /// is plain HTTP (retry on a new connection), not a reason to refresh
    /// the token. `expected`, `got` and `message` are only for logs: each is
    /// read when it is a string, else `""` (the code alone is the signal).
    pub fn from_http(status: u16, body: &[u8]) -> Option<Self> {
        if status != WRONG_CELL_STATUS || body.len() > MAX_SIGNAL_BODY {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
        let error = doc.as_object()?.get("error")?.as_object()?;
        if error.get("code")?.as_str()? != WRONG_CELL_CODE {
            return None;
        }
        let text = |name: &str| {
            error
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        Some(Self {
            expected: text("expected"),
            got: text("got"),
            message: text("message"),
        })
    }

    /// The signal in a gRPC status, if it is one: status `code`
    /// [`GRPC_WRONG_CELL_STATUS`] **and** a trailer whose key is
    /// [`GRPC_WRONG_CELL_TRAILER`] (compared ASCII case-insensitively); its
    /// value is `expected`. `message` is the status message; the refused
    /// token's cell is not in the trailer, so `got` is `""`.
    pub fn from_grpc<'a>(
        code: u32,
        trailers: impl IntoIterator<Item = (&'a str, &'a str)>,
        message: &str,
    ) -> Option<Self> {
        if code != GRPC_WRONG_CELL_STATUS {
            return None;
        }
        let (_, expected) = trailers
            .into_iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(GRPC_WRONG_CELL_TRAILER))?;
        Some(Self {
            expected: expected.to_owned(),
            got: String::new(),
            message: message.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_cell_round_trips_over_http() {
        let w = WrongCell::new("B.cells.example.com.", "a.cells.example.com");
        assert_eq!(w.expected, "b.cells.example.com");
        assert_eq!(w.got, "a.cells.example.com");
        let body = w.http_body();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "wrong_cell");
        assert_eq!(v["error"]["expected"], "b.cells.example.com");
        assert_eq!(v["error"]["got"], "a.cells.example.com");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("new token")
        );
        assert_eq!(WrongCell::from_http(421, &body), Some(w));
        // Only 421 with the code is the signal.
        assert_eq!(WrongCell::from_http(401, &body), None);
        let other = br#"{"error":{"code":"other","message":"","expected":"","got":""}}"#;
        assert_eq!(WrongCell::from_http(421, other), None);
        assert_eq!(WrongCell::from_http(421, b"Misdirected Request"), None);
        // The code alone is the signal; the rest is read when it is text.
        assert_eq!(
            WrongCell::from_http(421, br#"{"error":{"code":"wrong_cell","got":7}}"#),
            Some(WrongCell {
                expected: String::new(),
                got: String::new(),
                message: String::new()
            })
        );
        // A body larger than any signal is not parsed.
        let mut big = body.clone();
        big.resize(MAX_SIGNAL_BODY + 1, b' ');
        assert_eq!(WrongCell::from_http(421, &big), None);
    }

    #[test]
    fn wrong_cell_round_trips_over_grpc() {
        let w = WrongCell::new("B.cells.example.com.", "a.cells.example.com");
        let (key, value) = w.grpc_trailer();
        assert_eq!((key, value), ("cellns-wrong-cell", "b.cells.example.com"));
        let got = WrongCell::from_grpc(
            GRPC_WRONG_CELL_STATUS,
            [("x-other", "1"), ("Cellns-Wrong-Cell", value)],
            w.grpc_message(),
        )
        .unwrap();
        assert_eq!(got.expected, w.expected);
        assert_eq!(got.got, "");
        assert_eq!(got.message, w.message);
        // Only status 9 with the trailer is the signal.
        assert_eq!(WrongCell::from_grpc(14, [(key, value)], ""), None);
        assert_eq!(WrongCell::from_grpc(9, [("x-other", value)], ""), None);
    }
}
