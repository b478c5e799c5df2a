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

#[derive(Serialize, Deserialize)]
struct WrongCellBody {
    error: WrongCellError,
}

#[derive(Serialize, Deserialize)]
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

    /// The signal in an HTTP response, if it is one: status 421 **and** the
    /// `wrong_cell` code. A 421 without that code is plain HTTP (retry on a
    /// new connection), not a reason to refresh the token.
    pub fn from_http(status: u16, body: &[u8]) -> Option<Self> {
        if status != WRONG_CELL_STATUS {
            return None;
        }
        let b: WrongCellBody = serde_json::from_slice(body).ok()?;
        (b.error.code == WRONG_CELL_CODE).then_some(Self {
            expected: b.error.expected,
            got: b.error.got,
            message: b.error.message,
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
    }
}
