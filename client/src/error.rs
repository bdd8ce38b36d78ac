//! What a call to the apiserver can fail with: a Kubernetes `Status` from the server, or
//! a transport problem (no apiserver reachable), or an object that does not decode.

use serde::Deserialize;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The apiserver answered with a `Status` (404 NotFound, 409 Conflict, 410 Expired …).
    #[error("{reason} ({code}): {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// No apiserver could be reached, or the connection broke mid-call.
    #[error("apiserver unreachable: {0}")]
    Transport(String),
    /// The server's answer is not the object it should be.
    #[error("decoding the apiserver's answer: {0}")]
    Decode(String),
    /// Bad configuration (kubeconfig, certificates).
    #[error("client configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Deserialize)]
struct StatusBody {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

impl Error {
    /// The HTTP status code of an API error (0 for transport and decode errors).
    pub fn code(&self) -> u16 {
        match self {
            Error::Api { code, .. } => *code,
            _ => 0,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Error::Api { reason, .. } => reason,
            _ => "",
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == 404
    }

    pub fn is_already_exists(&self) -> bool {
        self.reason() == "AlreadyExists"
    }

    /// A resourceVersion precondition failed (409 Conflict).
    pub fn is_conflict(&self) -> bool {
        self.code() == 409 && self.reason() != "AlreadyExists"
    }

    /// The requested resourceVersion is compacted: relist.
    pub fn is_gone(&self) -> bool {
        self.code() == 410
    }

    /// Worth retrying on another apiserver (or the same one later).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transport(_)) || matches!(self.code(), 429 | 500 | 503 | 504)
    }

    /// Decodes a `Status` object (the body of an ERROR watch event).
    pub fn from_status_json(json: &[u8]) -> Error {
        match serde_json::from_slice::<StatusBody>(json) {
            Ok(s) => Error::Api {
                code: s.code,
                reason: s.reason,
                message: s.message,
            },
            Err(e) => Error::Decode(format!("a Status that does not decode: {e}")),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        // The apiserver puts the Kubernetes Status in the details; without it the status
        // came from the transport (connection refused, reset, TLS failure).
        if !s.details().is_empty() {
            if let Error::Api {
                code,
                reason,
                message,
            } = Error::from_status_json(s.details())
            {
                return Error::Api {
                    code,
                    reason,
                    message,
                };
            }
        }
        match s.code() {
            tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
            | tonic::Code::DeadlineExceeded => Error::Transport(s.to_string()),
            tonic::Code::Unauthenticated => Error::Api {
                code: 401,
                reason: "Unauthorized".into(),
                message: s.message().into(),
            },
            tonic::Code::PermissionDenied => Error::Api {
                code: 403,
                reason: "Forbidden".into(),
                message: s.message().into(),
            },
            _ => Error::Transport(s.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Decode(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_details_become_api_errors() {
        let body = br#"{"kind":"Status","code":409,"reason":"Conflict","message":"stale"}"#;
        let s = tonic::Status::with_details(tonic::Code::Aborted, "stale", body.to_vec().into());
        let e = Error::from(s);
        assert!(e.is_conflict() && !e.is_already_exists(), "{e}");
        let e = Error::from(tonic::Status::unavailable("tcp connect error"));
        assert!(e.is_transient(), "{e}");
        assert!(!Error::from_status_json(br#"{"code":404,"reason":"NotFound"}"#).is_transient());
    }
}
