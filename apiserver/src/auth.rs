//! Who is asking (authentication: client certificates and bearer tokens) and whether
//! they may (authorization: `--authorization-mode`).
//!
//! Authentication yields a `User` that travels with the request; authorization is a
//! trait so RBAC can be added beside `AlwaysAllow` without touching the handlers.

use std::collections::HashMap;
use std::path::Path;

/// An authenticated identity, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    fn with_authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == "system:authenticated") {
            self.groups.push("system:authenticated".into());
        }
        self
    }
}

/// The identity a verified client certificate carries: CN is the user, each O a group.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(
        User {
            name,
            uid: String::new(),
            groups,
        }
        .with_authenticated(),
    )
}

/// `--token-auth-file`: CSV lines `token,user,uid[,"group1,group2"]`.
#[derive(Debug, Default, Clone)]
pub struct TokenFile {
    tokens: HashMap<String, User>,
}

/// Splits one CSV line, honouring double quotes (the groups column is quoted).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl TokenFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = csv_fields(line);
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(format!(
                    "line {}: expected token,user,uid[,\"groups\"] (got {} fields)",
                    n + 1,
                    f.len()
                ));
            }
            let groups = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let user = User {
                name: f[1].clone(),
                uid: f[2].clone(),
                groups,
            }
            .with_authenticated();
            tokens.insert(f[0].clone(), user);
        }
        Ok(TokenFile { tokens })
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--token-auth-file: reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("--token-auth-file {}: {e}", path.display()))
    }

    /// The user an `Authorization: Bearer <token>` header names.
    pub fn authenticate(&self, authorization: &str) -> Option<User> {
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))?
            .trim();
        self.tokens.get(token).cloned()
    }
}

/// What a request wants to do, for the authorizer.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub user: &'a User,
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// A non-resource request's path (`/metrics`, `/apis`); "" for a resource request.
    pub path: &'a str,
}

/// Who makes a write, with the authorizer that judged the request: what the RBAC
/// registry asks when a role or binding would grant permissions (escalation).
#[derive(Clone)]
pub struct Requester {
    pub user: User,
    pub authorizer: std::sync::Arc<dyn Authorizer>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("user", &self.user)
            .finish()
    }
}

/// What one authorizer makes of a request. In a chain the first `Allow` or `Deny`
/// decides; if every one has no opinion, the request is forbidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
    NoOpinion,
}

pub trait Authorizer: Send + Sync {
    fn decide(&self, attrs: &Attributes<'_>) -> Decision;

    /// Ok, or the reason it is forbidden ("" when no authorizer gave one, as with RBAC).
    fn authorize(&self, attrs: &Attributes<'_>) -> Result<(), String> {
        match self.decide(attrs) {
            Decision::Allow => Ok(()),
            Decision::Deny(why) => Err(why),
            Decision::NoOpinion => Err(String::new()),
        }
    }
}

pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn decide(&self, _: &Attributes<'_>) -> Decision {
        Decision::Allow
    }
}

pub struct AlwaysDeny;

impl Authorizer for AlwaysDeny {
    fn decide(&self, _: &Attributes<'_>) -> Decision {
        Decision::Deny("Everything is forbidden.".into())
    }
}

/// The modes of `--authorization-mode`, tried in order.
pub struct Chain(Vec<Box<dyn Authorizer>>);

impl Authorizer for Chain {
    fn decide(&self, attrs: &Attributes<'_>) -> Decision {
        for a in &self.0 {
            match a.decide(attrs) {
                Decision::NoOpinion => continue,
                decided => return decided,
            }
        }
        Decision::NoOpinion
    }
}

/// One `--authorization-mode` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AlwaysAllow,
    AlwaysDeny,
    Rbac,
}

/// `--authorization-mode`: a comma-separated list, as in kube-apiserver.
pub fn parse_modes(mode: &str) -> anyhow::Result<Vec<Mode>> {
    mode.split(',')
        .map(str::trim)
        .map(|m| match m {
            "AlwaysAllow" => Ok(Mode::AlwaysAllow),
            "AlwaysDeny" => Ok(Mode::AlwaysDeny),
            "RBAC" => Ok(Mode::Rbac),
            other => anyhow::bail!(
                "--authorization-mode {mode:?}: unknown mode {other:?} (supported: AlwaysAllow, AlwaysDeny, RBAC)"
            ),
        })
        .collect()
}

/// The authorizer of `modes`; `rbac` builds the RBAC one (it reads the store's caches).
pub fn chain(modes: &[Mode], rbac: impl Fn() -> Box<dyn Authorizer>) -> Chain {
    Chain(
        modes
            .iter()
            .map(|m| match m {
                Mode::AlwaysAllow => Box::new(AlwaysAllow) as Box<dyn Authorizer>,
                Mode::AlwaysDeny => Box::new(AlwaysDeny),
                Mode::Rbac => rbac(),
            })
            .collect(),
    )
}

/// `Impersonate-User` / `Impersonate-Group` (`kubectl --as`, `--as-group`): the request
/// acts as that user if its own user may `impersonate` the user (a service account's
/// name as the `serviceaccounts` object) and each group; otherwise a 403.
pub fn impersonate(
    headers: &http::HeaderMap,
    user: User,
    authorizer: &dyn Authorizer,
) -> Result<User, crate::error::ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let groups = values("impersonate-group");
    let Some(name) = values("impersonate-user").into_iter().next() else {
        if groups.is_empty() {
            return Ok(user);
        }
        return Err(crate::error::ApiError::bad_request(
            "requested impersonation of groups without a user (Impersonate-User)",
        ));
    };
    let check = |resource: &str, namespace: &str, object: &str| {
        let attrs = Attributes {
            user: &user,
            verb: "impersonate",
            group: "",
            resource,
            subresource: "",
            namespace,
            name: object,
            path: "",
        };
        authorizer.authorize(&attrs).map_err(|why| {
            crate::error::ApiError::forbidden(forbidden_message(&attrs, resource, &why))
        })
    };
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((ns, sa)) => check("serviceaccounts", ns, sa)?,
        None => check("users", "", &name)?,
    }
    for g in &groups {
        check("groups", "", g)?;
    }
    Ok(User {
        name,
        uid: values("impersonate-uid")
            .into_iter()
            .next()
            .unwrap_or_default(),
        groups,
    }
    .with_authenticated())
}

/// Kubernetes' text for a refused request: `pods "web" is forbidden: User "alice" cannot
/// get resource "pods" in API group "" in the namespace "default"`, then the reason if an
/// authorizer gave one.
pub fn forbidden_message(attrs: &Attributes<'_>, qualified_resource: &str, why: &str) -> String {
    let user = &attrs.user.name;
    let mut m = if !attrs.path.is_empty() {
        format!(
            "forbidden: User \"{user}\" cannot {} path \"{}\"",
            attrs.verb, attrs.path
        )
    } else {
        let object = match attrs.name {
            "" => qualified_resource.to_string(),
            name => format!("{qualified_resource} \"{name}\""),
        };
        let resource = match attrs.subresource {
            "" => attrs.resource.to_string(),
            sub => format!("{}/{sub}", attrs.resource),
        };
        let scope = match attrs.namespace {
            "" => "at the cluster scope".to_string(),
            ns => format!("in the namespace \"{ns}\""),
        };
        format!(
            "{object} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            attrs.verb, attrs.group
        )
    };
    if !why.is_empty() {
        m.push_str(": ");
        m.push_str(why);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_with_quoted_groups() {
        let f = TokenFile::parse("# comment\nsecret,alice,1001,\"dev,ops\"\nt2,bob,2\n").unwrap();
        let alice = f.authenticate("Bearer secret").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        assert_eq!(f.authenticate("Bearer t2").unwrap().name, "bob");
        assert!(f.authenticate("Bearer nope").is_none());
        assert!(f.authenticate("Basic secret").is_none());
        assert!(TokenFile::parse("onlytoken\n").is_err());
    }

    #[test]
    fn authorization_modes_chain_in_order() {
        let modes = parse_modes("AlwaysDeny, AlwaysAllow").unwrap();
        assert_eq!(modes, vec![Mode::AlwaysDeny, Mode::AlwaysAllow]);
        let e = parse_modes("RBAC,Webhook").err().unwrap().to_string();
        assert!(
            e.contains("--authorization-mode") && e.contains("Webhook"),
            "{e}"
        );
        let user = User {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![],
        };
        let attrs = Attributes {
            user: &user,
            verb: "get",
            group: "",
            resource: "pods",
            subresource: "log",
            namespace: "default",
            name: "web",
            path: "",
        };
        let deny = chain(&modes, || Box::new(AlwaysAllow));
        let why = deny.authorize(&attrs).unwrap_err();
        assert_eq!(
            forbidden_message(&attrs, "pods", &why),
            "pods \"web\" is forbidden: User \"alice\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"default\": Everything is forbidden."
        );
        assert!(chain(&[Mode::AlwaysAllow], || Box::new(AlwaysDeny))
            .authorize(&attrs)
            .is_ok());
    }
}
