//! Field selectors (`?fieldSelector=`, `kubectl --field-selector`): `f=v`, `f==v`, `f!=v`,
//! comma-separated, with `\` escaping `,`, `=`, `!` and `\` in values; which fields each
//! resource supports; and evaluation against an object's JSON.

use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldSelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    /// `!=` when true, `=`/`==` otherwise.
    pub negated: bool,
}

/// All requirements must hold. An empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

/// Fields every resource supports.
const COMMON: &[&str] = &["metadata.name", "metadata.namespace"];

/// The extra fields a resource supports, by (API group, plural resource).
fn extra_fields(group: &str, resource: &str) -> &'static [&'static str] {
    match (group, resource) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") | ("events.k8s.io", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        _ => &[],
    }
}

/// Whether `field` can be selected on the resource.
pub fn supports(group: &str, resource: &str, field: &str) -> bool {
    COMMON.contains(&field) || extra_fields(group, resource).contains(&field)
}

impl FieldSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Parses the string form, without checking which fields exist.
    pub fn parse(input: &str) -> Result<Self, FieldSelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self::default());
        }
        for term in split_unescaped(input, ',') {
            requirements.push(parse_term(&term)?);
        }
        Ok(FieldSelector { requirements })
    }

    /// Parses and checks every field against what the resource supports (an unknown field
    /// is Kubernetes' "field label not supported" error, a 400 in the apiserver).
    pub fn parse_for(input: &str, group: &str, resource: &str) -> Result<Self, FieldSelectorError> {
        let sel = Self::parse(input)?;
        for r in &sel.requirements {
            if !supports(group, resource, &r.field) {
                return Err(FieldSelectorError(format!(
                    "field label not supported: {}",
                    r.field
                )));
            }
        }
        Ok(sel)
    }

    /// Evaluates against an object's JSON. A missing field compares as "" (so
    /// `spec.nodeName=` selects unscheduled pods, as in Kubernetes).
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let got = field_value(object, &r.field);
            (got == r.value) != r.negated
        })
    }

    /// The value a requirement pins with `=`, if any (lets servers narrow a list, e.g. by
    /// `metadata.name` or `spec.nodeName`, before evaluating the rest).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }
}

/// The string value of a dotted field path in an object, as the apiserver compares it:
/// strings as is, booleans and numbers printed, missing or null as "".
pub fn field_value<'a>(object: &'a Value, path: &str) -> Cow<'a, str> {
    let mut v = object;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return Cow::Borrowed(""),
        }
    }
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Bool(b) => Cow::Owned(b.to_string()),
        Value::Number(n) => Cow::Owned(n.to_string()),
        // `source` on events is an object: Kubernetes selects on its `component`.
        Value::Object(o) => Cow::Borrowed(
            o.get("component")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ),
        _ => Cow::Borrowed(""),
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if r.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", r.field, escape(&r.value))?;
        }
        Ok(())
    }
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '=' | '!') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits on `sep` where it is not escaped by a backslash; escapes are kept for the
/// term parser.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn parse_term(term: &str) -> Result<FieldRequirement, FieldSelectorError> {
    let bad = || {
        FieldSelectorError(format!(
            "invalid selector: '{term}'; can't understand '{term}'"
        ))
    };
    // Find the first unescaped operator.
    let chars: Vec<char> = term.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '!' if chars.get(i + 1) == Some(&'=') => return build(&chars, i, 2, true, term),
            '=' if chars.get(i + 1) == Some(&'=') => return build(&chars, i, 2, false, term),
            '=' => return build(&chars, i, 1, false, term),
            _ => i += 1,
        }
    }
    Err(bad())
}

fn build(
    chars: &[char],
    at: usize,
    op_len: usize,
    negated: bool,
    term: &str,
) -> Result<FieldRequirement, FieldSelectorError> {
    let field: String = chars[..at].iter().collect::<String>().trim().to_string();
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if field.is_empty() || !field.chars().all(valid_char) {
        return Err(FieldSelectorError(format!(
            "invalid selector: '{term}'; invalid field name {field:?}"
        )));
    }
    let raw: String = chars[at + op_len..].iter().collect();
    let value = unescape(&raw)
        .map_err(|e| FieldSelectorError(format!("invalid selector: '{term}'; {e}")))?;
    Ok(FieldRequirement {
        field,
        value,
        negated,
    })
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=' | '!')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence '\\{e}'")),
                None => return Err("unterminated escape sequence".into()),
            },
            // Unescaped operator characters in a value are ambiguous.
            '=' | ',' => return Err(format!("unescaped '{c}' in value")),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": false},
            "status": {"phase": "Running"}
        })
    }

    #[test]
    fn parses_and_matches() {
        let p = pod();
        for (s, want) in [
            ("metadata.name=web-1", true),
            ("metadata.name==web-1", true),
            ("metadata.name!=web-1", false),
            ("spec.nodeName=n1,status.phase=Running", true),
            ("spec.nodeName=n1,status.phase!=Running", false),
            ("status.podIP=", true),
            ("spec.hostNetwork=false", true),
            ("", true),
        ] {
            let sel =
                FieldSelector::parse_for(s, "", "pods").unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&p), want, "{s}");
        }
    }

    #[test]
    fn events_involved_object() {
        let ev = json!({"involvedObject": {"name": "p", "namespace": "ns", "uid": "u1", "kind": "Pod"},
                        "source": {"component": "kubelet"}, "type": "Normal"});
        let sel = FieldSelector::parse_for(
            "involvedObject.name=p,involvedObject.namespace=ns,involvedObject.uid=u1,source=kubelet",
            "",
            "events",
        )
        .unwrap();
        assert!(sel.matches(&ev));
    }

    #[test]
    fn unknown_fields_are_rejected_per_resource() {
        let e = FieldSelector::parse_for("spec.nodeName=x", "", "services").unwrap_err();
        assert_eq!(e.0, "field label not supported: spec.nodeName");
        assert!(FieldSelector::parse_for("foo=bar", "", "pods").is_err());
        assert!(FieldSelector::parse_for("metadata.name=x", "apps", "deployments").is_ok());
    }

    #[test]
    fn escaping_round_trips() {
        let sel = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(sel.requirements[0].value, r"a,b=c\d");
        assert_eq!(FieldSelector::parse(&sel.to_string()).unwrap(), sel);
        assert_eq!(sel.exact("metadata.name"), Some(r"a,b=c\d"));
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "a", "=b", "a=b,", ",a=b", "a=b=c", r"a=\x", "a=b\\", "!=x", "a,b",
        ] {
            assert!(FieldSelector::parse(s).is_err(), "{s:?} should be rejected");
        }
    }
}
