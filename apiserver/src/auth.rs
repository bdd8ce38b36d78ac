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
}

pub trait Authorizer: Send + Sync {
    /// Ok, or the reason it is forbidden.
    fn authorize(&self, attrs: &Attributes<'_>) -> Result<(), String>;
}

pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &Attributes<'_>) -> Result<(), String> {
        Ok(())
    }
}

pub struct AlwaysDeny;

impl Authorizer for AlwaysDeny {
    fn authorize(&self, _: &Attributes<'_>) -> Result<(), String> {
        Err("the server denies every request (--authorization-mode=AlwaysDeny)".into())
    }
}

/// `--authorization-mode`: a comma-separated list tried in order, as in kube-apiserver.
pub fn authorizer(mode: &str) -> anyhow::Result<Box<dyn Authorizer>> {
    let modes: Vec<&str> = mode.split(',').map(str::trim).collect();
    match modes.as_slice() {
        ["AlwaysAllow"] => Ok(Box::new(AlwaysAllow)),
        ["AlwaysDeny"] => Ok(Box::new(AlwaysDeny)),
        _ => anyhow::bail!(
            "--authorization-mode {mode:?}: supported modes are AlwaysAllow and AlwaysDeny (RBAC is not built yet)"
        ),
    }
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
    fn authorization_modes() {
        assert!(authorizer("AlwaysAllow").is_ok());
        let e = authorizer("RBAC").err().unwrap().to_string();
        assert!(e.contains("--authorization-mode"), "{e}");
    }
}
