//! Every failure the apiserver reports, as the Kubernetes `Status` object it becomes on
//! the wire (REST body, watch ERROR event, or gRPC status details).

use api::ResourceInfo;
use serde_json::{json, Value};

/// One field-level problem of an `Invalid` (422) error.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`,
    /// `FieldValueForbidden`, `FieldValueDuplicate`.
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        let field = field.into();
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".to_string(),
            field,
        }
    }

    pub fn required_msg(field: impl Into<String>, detail: &str) -> Self {
        let field = field.into();
        Cause {
            reason: "FieldValueRequired",
            message: format!("Required value: {detail}"),
            field,
        }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let field = field.into();
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value}: {detail}"),
            field,
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Self {
        let field = field.into();
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                allowed.join(", ")
            ),
            field,
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        let field = field.into();
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
            field,
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        let field = field.into();
        Cause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {value}"),
            field,
        }
    }
}

/// A failed request: HTTP code, Kubernetes reason, message and details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details.name`, `details.group`, `details.kind` (the plural resource, as Kubernetes
    /// puts it there).
    pub name: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    pub retry_after_seconds: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: None,
            group: None,
            kind: None,
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }

    fn about(mut self, info: &ResourceInfo, name: &str) -> Self {
        self.name = Some(name.to_string());
        self.group = Some(info.group.to_string());
        self.kind = Some(info.resource.to_string());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// An admission refusal: `<resource> "<name>" is forbidden: <why>`.
    pub fn denied(info: &ResourceInfo, name: &str, why: impl std::fmt::Display) -> Self {
        Self::forbidden(format!(
            "{} \"{name}\" is forbidden: {why}",
            info.qualified_resource()
        ))
        .about(info, name)
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", info.qualified_resource()),
        )
        .about(info, name)
    }

    /// A path that names no resource this server knows.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", info.qualified_resource()),
        )
        .about(info, name)
    }

    /// A stale resourceVersion or failed precondition.
    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                info.qualified_resource()
            ),
        )
        .about(info, name)
    }

    pub fn stale(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> Self {
        // Each cause's message lacks its field; the summary prefixes it, as Kubernetes does.
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let detail = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {detail}", info.kind),
        )
        .about(info, name);
        e.kind = Some(info.kind.to_string());
        e.causes = causes;
        e
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn gone_revision(rv: i64) -> Self {
        Self::expired(format!("too old resource version: {rv}"))
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"),
        )
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    pub fn unavailable(message: impl std::fmt::Display) -> Self {
        Self::new(503, "ServiceUnavailable", message.to_string())
    }

    /// The `Status` object (`kind: Status`, `status: Failure`).
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if let Some(n) = &self.name {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = &self.group {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &self.kind {
            details.insert("kind".into(), json!(k));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(s) = self.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), json!(s));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }

    /// The gRPC form: a status code close to the HTTP one, the message, and the `Status`
    /// JSON in the details so clients can read reason and code exactly.
    pub fn to_grpc(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self.code {
            400 | 422 | 413 | 415 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 if self.reason == "AlreadyExists" => Code::AlreadyExists,
            409 => Code::Aborted,
            410 => Code::OutOfRange,
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Internal,
        };
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        tonic::Status::with_details(code, self.message.clone(), body.into())
    }
}

/// The `Status` a successful delete of a whole collection or a kubelet-style call returns.
pub fn success_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

impl From<etcd_client::Error> for ApiError {
    fn from(e: etcd_client::Error) -> Self {
        match &e {
            etcd_client::Error::GRpcStatus(s)
                if s.message().contains("required revision has been compacted") =>
            {
                ApiError::expired(format!(
                    "The resourceVersion for the provided list is too old: {}",
                    s.message()
                ))
            }
            etcd_client::Error::GRpcStatus(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
            {
                ApiError::unavailable(format!("storage unavailable: {}", s.message()))
            }
            _ => ApiError::internal(format!("storage: {e}")),
        }
    }
}
