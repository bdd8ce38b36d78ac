//! Label selectors: the string grammar of `?labelSelector=` and `kubectl -l`, the
//! structured `LabelSelector` of workload specs, validation of label keys and values, and
//! matching against an object's labels.
//!
//! Grammar (comma-separated requirements, whitespace allowed between tokens):
//! `k=v`, `k==v`, `k!=v`, `k in (v1,v2)`, `k notin (v1)`, `k` (exists), `!k` (does not
//! exist), `k>N`, `k<N` (integer comparisons).

use crate::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SelectorError> {
    Err(SelectorError(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
    /// Sorted and de-duplicated, as Kubernetes keeps them.
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Builds a requirement, validating the key, the values and their count for `op`.
    pub fn new(
        key: &str,
        op: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Self, SelectorError> {
        validate_key(key)?;
        let values: BTreeSet<String> = values.into_iter().collect();
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return err("for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                return err("exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return err("values set must be empty for exists and does not exist")
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return err("for 'Gt', 'Lt' operators, exactly one value is required");
                }
                let v = values.iter().next().map(String::as_str).unwrap_or("");
                if v.parse::<i64>().is_err() {
                    return err(format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"
                    ));
                }
            }
            _ => {}
        }
        if !matches!(op, Operator::GreaterThan | Operator::LessThan) {
            for v in &values {
                validate_value(v)?;
            }
        }
        Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_by(&|k| labels.get(k).map(String::as_str))
    }

    /// Like `matches`, reading the labels through `label` (the value of a key, if set).
    pub fn matches_by<'a>(&self, label: &dyn Fn(&str) -> Option<&'a str>) -> bool {
        let got = label(&self.key);
        match self.op {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                got.is_some_and(|v| self.values.contains(v))
            }
            Operator::NotEquals | Operator::NotIn => got.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    got.and_then(|v| v.parse::<i64>().ok()),
                    self.values
                        .iter()
                        .next()
                        .and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = || self.values.iter().next().cloned().unwrap_or_default();
        let set = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.op {
            Operator::Equals => write!(f, "{}={}", self.key, one()),
            Operator::DoubleEquals => write!(f, "{}=={}", self.key, one()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, one()),
            Operator::In => write!(f, "{} in ({})", self.key, set()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, set()),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, one()),
            Operator::LessThan => write!(f, "{}<{}", self.key, one()),
        }
    }
}

/// A parsed selector: all requirements must match. `Nothing` matches no object; it is what
/// a missing (`null`) structured selector means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Requirements(Vec<Requirement>),
    Nothing,
}

impl Selector {
    /// The selector that matches every object (an empty string or an empty `LabelSelector`).
    pub fn everything() -> Self {
        Selector::Requirements(Vec::new())
    }

    pub fn is_everything(&self) -> bool {
        matches!(self, Selector::Requirements(r) if r.is_empty())
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_by(&|k| labels.get(k).map(String::as_str))
    }

    /// Like `matches`, reading the labels through `label` (the value of a key, if set),
    /// so a caller holding them in another shape builds no map.
    pub fn matches_by<'a>(&self, label: &dyn Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            Selector::Requirements(reqs) => reqs.iter().all(|r| r.matches_by(label)),
            Selector::Nothing => false,
        }
    }

    /// Like `matches`, for objects whose labels may be absent.
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match labels {
            Some(l) => self.matches(l),
            None => self.matches(&BTreeMap::new()),
        }
    }

    /// Parses the string form (`?labelSelector=`). An empty string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut p = Parser {
            tokens: lex(input)?,
            pos: 0,
        };
        let mut reqs = Vec::new();
        if p.tokens.is_empty() {
            return Ok(Selector::everything());
        }
        loop {
            reqs.push(p.requirement()?);
            match p.next() {
                None => break,
                Some(Token::Comma) => {
                    if p.peek().is_none() {
                        return err(format!("{input:?}: found trailing ','"));
                    }
                }
                Some(t) => return err(format!("{input:?}: found '{t}', expected: ','")),
            }
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector::Requirements(reqs))
    }

    /// Converts a structured selector (`matchLabels` + `matchExpressions`). `None` means
    /// nothing matches; an empty selector matches everything (Kubernetes'
    /// `LabelSelectorAsSelector`).
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Result<Self, SelectorError> {
        let Some(sel) = sel else {
            return Ok(Selector::Nothing);
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement::new(k, Operator::Equals, [v.clone()])?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return err(format!("{other:?} is not a valid label selector operator")),
            };
            reqs.push(Requirement::new(
                &expr.key,
                op,
                expr.values.iter().flatten().cloned(),
            )?);
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector::Requirements(reqs))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Nothing => Ok(()),
            Selector::Requirements(reqs) => {
                for (i, r) in reqs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{r}")?;
                }
                Ok(())
            }
        }
    }
}

/// A label key: an optional DNS-1123 subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn validate_key(key: &str) -> Result<(), SelectorError> {
    let errs = names::qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        err(format!("invalid label key {key:?}: {}", errs.join("; ")))
    }
}

/// A label value: empty, or at most 63 characters like a qualified name's name part.
pub fn validate_value(value: &str) -> Result<(), SelectorError> {
    let errs = names::label_value(value);
    if errs.is_empty() {
        Ok(())
    } else {
        err(format!(
            "invalid label value: {value:?}: {}",
            errs.join("; ")
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Gt,
    Lt,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::Ident(s) => s,
            Token::Comma => ",",
            Token::Open => "(",
            Token::Close => ")",
            Token::Eq => "=",
            Token::DoubleEq => "==",
            Token::NotEq => "!=",
            Token::Bang => "!",
            Token::Gt => ">",
            Token::Lt => "<",
        })
    }
}

fn lex(input: &str) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            ',' => {
                out.push(Token::Comma);
                i += 1
            }
            '(' => {
                out.push(Token::Open);
                i += 1
            }
            ')' => {
                out.push(Token::Close);
                i += 1
            }
            '>' => {
                out.push(Token::Gt);
                i += 1
            }
            '<' => {
                out.push(Token::Lt);
                i += 1
            }
            '=' if next == Some('=') => {
                out.push(Token::DoubleEq);
                i += 2
            }
            '=' => {
                out.push(Token::Eq);
                i += 1
            }
            '!' if next == Some('=') => {
                out.push(Token::NotEq);
                i += 2
            }
            '!' => {
                out.push(Token::Bang);
                i += 1
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !",()=!<>".contains(chars[i])
                {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Token::Bang) {
            self.pos += 1;
            let key = self.ident("a key after '!'")?;
            return Requirement::new(&key, Operator::DoesNotExist, []);
        }
        let key = self.ident("a key")?;
        let op = match self.peek() {
            None | Some(Token::Comma) => return Requirement::new(&key, Operator::Exists, []),
            Some(Token::Eq) => Operator::Equals,
            Some(Token::DoubleEq) => Operator::DoubleEquals,
            Some(Token::NotEq) => Operator::NotEquals,
            Some(Token::Gt) => Operator::GreaterThan,
            Some(Token::Lt) => Operator::LessThan,
            Some(Token::Ident(w)) if w == "in" => Operator::In,
            Some(Token::Ident(w)) if w == "notin" => Operator::NotIn,
            Some(t) => {
                return err(format!(
                    "found '{t}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        };
        self.pos += 1;
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => match self.peek() {
                // `k=` selects an empty value.
                None | Some(Token::Comma) => vec![String::new()],
                Some(Token::Ident(_)) => vec![self.ident("a value")?],
                Some(t) => return err(format!("found '{t}', expected: identifier")),
            },
        };
        Requirement::new(&key, op, values)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        if self.next() != Some(Token::Open) {
            return err("found missing '(', expected: '('");
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Ident(v)) => {
                    values.push(v);
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => return Ok(values),
                        other => return err(unexpected(other, "',' or ')'")),
                    }
                }
                Some(Token::Close) => return Ok(values),
                // `in (a,,b)` and `in (,a)` carry empty values, as Kubernetes allows.
                Some(Token::Comma) => values.push(String::new()),
                other => return err(unexpected(other, "a value or ')'")),
            }
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, SelectorError> {
        match self.next() {
            Some(Token::Ident(s)) => Ok(s),
            other => err(unexpected(other, what)),
        }
    }
}

fn unexpected(got: Option<Token>, wanted: &str) -> String {
    match got {
        Some(t) => format!("found '{t}', expected: {wanted}"),
        None => format!("found end of input, expected: {wanted}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app notin (web)", false),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("n>4", true),
            ("n<4", false),
            ("missing>1", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("  app = web ,  tier in(front)  ", true),
            ("", true),
            ("example.com/role=x", false),
        ];
        for (s, want) in cases {
            let sel = Selector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(sel.matches(&l), want, "{s:?}");
        }
    }

    #[test]
    fn empty_value_is_allowed() {
        let sel = Selector::parse("a=").unwrap();
        assert!(sel.matches(&labels(&[("a", "")])));
        assert!(!sel.matches(&labels(&[("a", "x")])));
        let sel = Selector::parse("a in (,x)").unwrap();
        assert!(sel.matches(&labels(&[("a", "")])));
    }

    #[test]
    fn display_round_trips_sorted() {
        let sel = Selector::parse("z=1, a in (y,x), !b, c, d!=2, e notin (q)").unwrap();
        let s = sel.to_string();
        assert_eq!(s, "a in (x,y),!b,c,d!=2,e notin (q),z=1");
        assert_eq!(Selector::parse(&s).unwrap(), sel);
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "a=b,",
            ",a",
            "a in b",
            "a in (b",
            "a in ()",
            "a notin ()",
            "a b",
            "=b",
            "!",
            "!a=b",
            "a=(b)",
            "a>b",
            "-a=b",
            "a=b c",
            "a in (b c)",
            "a/b/c=d",
            "a=-b",
            &format!("a={}", "x".repeat(64)),
            &format!("{}=x", "k".repeat(64)),
        ] {
            assert!(Selector::parse(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn validates_keys_and_values() {
        assert!(validate_key("app.kubernetes.io/name").is_ok());
        assert!(validate_key("a_b.c-d").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("/a").is_err());
        assert!(validate_key("Bad_Prefix/a").is_err());
        assert!(validate_value("").is_ok());
        assert!(validate_value("a-b_c.d").is_ok());
        assert!(validate_value("-a").is_err());
    }

    #[test]
    fn structured_selector() {
        assert_eq!(
            Selector::from_label_selector(None).unwrap(),
            Selector::Nothing
        );
        assert!(!Selector::Nothing.matches(&labels(&[])));
        let empty = LabelSelector::default();
        assert!(Selector::from_label_selector(Some(&empty))
            .unwrap()
            .is_everything());

        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = Selector::from_label_selector(Some(&sel)).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "b"), ("canary", "1")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert_eq!(s.to_string(), "app=web,!canary,tier in (a,b)");

        for (op, values) in [
            ("In", None),
            ("Exists", Some(vec!["x".to_string()])),
            ("Bogus", None),
        ] {
            let bad = LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: op.into(),
                    values,
                }]),
                ..Default::default()
            };
            assert!(Selector::from_label_selector(Some(&bad)).is_err(), "{op}");
        }
    }
}
