//! Service account tokens: the JWTs the apiserver issues for
//! `serviceaccounts/<name>/token` (TokenRequest, `kubectl create token`) and accepts as
//! bearer tokens, as Kubernetes' bound service account tokens.
//!
//! Tokens are ES256 (ECDSA P-256) signed with `--service-account-signing-key-file` and
//! checked against that key and any in `--service-account-key-file`. A token names its
//! service account by name and uid: it stops working when that account is deleted (even
//! if one of the same name is made again), when it expires, or when its audiences do not
//! include the apiserver's (`--service-account-issuer`). RSA keys (kubeadm's default
//! `sa.key`) are refused at startup with a clear error: only P-256 keys are supported.

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

pub struct Tokens {
    issuer: String,
    signer: Option<(EcdsaKeyPair, String)>,
    /// Key ids and uncompressed P-256 points.
    keys: Vec<(String, Vec<u8>)>,
    rng: SystemRandom,
}

fn kid(point: &[u8]) -> String {
    B64.encode(ring::digest::digest(&ring::digest::SHA256, point))
}

/// A PEM file's P-256 public points, and its first private key (PKCS#8 DER) if any.
struct KeyFile {
    points: Vec<Vec<u8>>,
    private: Option<Vec<u8>>,
}

/// The P-256 keys in a PEM file: private keys (PKCS#8) give their public half, public
/// keys (SPKI) are taken as they are.
fn points(flag: &str, path: &Path) -> anyhow::Result<KeyFile> {
    let pem = std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))?;
    let (mut out, mut private) = (Vec::new(), None);
    for item in rustls_pemfile::read_all(&mut pem.as_slice()) {
        let item = item.with_context(|| format!("{flag}: {} is not PEM", path.display()))?;
        match item {
            rustls_pemfile::Item::Pkcs8Key(k) => {
                let der = k.secret_pkcs8_der().to_vec();
                let pair = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &SystemRandom::new(),
                )
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{flag}: {} is not an ECDSA P-256 key (only P-256 keys are supported)",
                        path.display()
                    )
                })?;
                out.push(pair.public_key().as_ref().to_vec());
                private.get_or_insert(der);
            }
            rustls_pemfile::Item::SubjectPublicKeyInfo(spki) => {
                // SEQUENCE { algorithm (id-ecPublicKey, prime256v1), BIT STRING 0 || point }:
                // 91 bytes whose last 65 are the uncompressed point.
                let der = spki.as_ref();
                if der.len() != 91 || der[26] != 0x04 {
                    bail!(
                        "{flag}: a public key in {} is not ECDSA P-256 (only P-256 keys are supported)",
                        path.display()
                    );
                }
                out.push(der[26..].to_vec());
            }
            rustls_pemfile::Item::Pkcs1Key(_) => bail!(
                "{flag}: {} holds an RSA key; only ECDSA P-256 keys are supported",
                path.display()
            ),
            _ => {}
        }
    }
    if out.is_empty() {
        bail!("{flag}: no key in {}", path.display());
    }
    Ok(KeyFile {
        points: out,
        private,
    })
}

impl Tokens {
    /// From the flags; None when no key is given (then TokenRequest is refused and no
    /// JWT authenticates).
    pub fn load(
        issuer: &str,
        signing_key: Option<&Path>,
        keys: &[PathBuf],
    ) -> anyhow::Result<Option<Self>> {
        let flag = "--service-account-signing-key-file";
        let mut t = Tokens {
            issuer: issuer.to_string(),
            signer: None,
            keys: Vec::new(),
            rng: SystemRandom::new(),
        };
        if let Some(path) = signing_key {
            let KeyFile {
                points: pts,
                private,
            } = points(flag, path)?;
            let der = private
                .with_context(|| format!("{flag}: {} holds no private key", path.display()))?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &t.rng)
                    .map_err(|_| {
                        anyhow::anyhow!("{flag}: {} is not a P-256 key", path.display())
                    })?;
            let id = kid(&pts[0]);
            t.keys.push((id.clone(), pts[0].clone()));
            t.signer = Some((pair, id));
        }
        for path in keys {
            let file = points("--service-account-key-file", path)?;
            t.keys.extend(file.points.into_iter().map(|p| (kid(&p), p)));
        }
        Ok((!t.keys.is_empty()).then_some(t))
    }

    /// A token for the service account, valid for `seconds` from `now` (unix seconds)
    /// for `audiences` (the issuer when empty); also the expiry.
    pub fn issue(
        &self,
        claims: &Claims,
        audiences: &[String],
        now: i64,
        seconds: i64,
    ) -> Result<(String, i64), String> {
        let Some((key, id)) = &self.signer else {
            return Err(
                "no --service-account-signing-key-file: the apiserver issues no tokens".into(),
            );
        };
        let aud = if audiences.is_empty() {
            vec![self.issuer.clone()]
        } else {
            audiences.to_vec()
        };
        let exp = now + seconds;
        let header = json!({"alg": "ES256", "kid": id});
        let body = json!({
            "iss": self.issuer, "aud": aud, "exp": exp, "iat": now, "nbf": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            "kubernetes.io": {"namespace": claims.namespace,
                "serviceaccount": {"name": claims.name, "uid": claims.uid}},
        });
        let signed = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(body.to_string())
        );
        let sig = key
            .sign(&self.rng, signed.as_bytes())
            .map_err(|_| "signing the token failed".to_string())?;
        Ok((format!("{signed}.{}", B64.encode(sig.as_ref())), exp))
    }

    /// The claims of a token this apiserver accepts at `now`, or None.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, b, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        let signed = &token[..h.len() + 1 + b.len()];
        let kid = header["kid"].as_str();
        let verified = self
            .keys
            .iter()
            .filter(|(id, _)| kid.is_none_or(|k| k == id))
            .any(|(_, point)| {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed.as_bytes(), &sig)
                    .is_ok()
            });
        if !verified {
            return None;
        }
        let body: Value = serde_json::from_slice(&B64.decode(b).ok()?).ok()?;
        let aud_ok = match &body["aud"] {
            Value::String(a) => *a == self.issuer,
            Value::Array(a) => a.iter().any(|x| *x == *self.issuer),
            _ => false,
        };
        let exp = body["exp"].as_i64()?;
        let nbf = body["nbf"].as_i64().unwrap_or(0);
        if body["iss"] != *self.issuer || !aud_ok || now >= exp || now < nbf {
            return None;
        }
        let k = &body["kubernetes.io"];
        Some(Claims {
            namespace: k["namespace"].as_str()?.to_string(),
            name: k["serviceaccount"]["name"].as_str()?.to_string(),
            uid: k["serviceaccount"]["uid"].as_str()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(dir: &Path, issuer: &str) -> Tokens {
        let key = rcgen::KeyPair::generate().unwrap();
        let path = dir.join(format!("{}.key", uuid::Uuid::new_v4()));
        std::fs::write(&path, key.serialize_pem()).unwrap();
        Tokens::load(issuer, Some(&path), &[]).unwrap().unwrap()
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_here() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path(), "https://kubernetes.default.svc");
        let who = Claims {
            namespace: "dev".into(),
            name: "builder".into(),
            uid: "u-1".into(),
        };
        let (token, exp) = t.issue(&who, &[], 1_000, 3_600).unwrap();
        assert_eq!(exp, 4_600);
        assert_eq!(t.verify(&token, 1_001), Some(who.clone()));
        assert_eq!(t.verify(&token, 4_600), None, "expired");
        let (other_aud, _) = t.issue(&who, &["vault".into()], 1_000, 3_600).unwrap();
        assert_eq!(t.verify(&other_aud, 1_001), None, "another audience");
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(t.verify(&forged, 1_001), None, "bad signature");
        let elsewhere = tokens(dir.path(), "https://kubernetes.default.svc");
        assert_eq!(elsewhere.verify(&token, 1_001), None, "another key");
    }

    #[test]
    fn rsa_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        std::fs::write(
            &path,
            "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = Tokens::load("x", Some(&path), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--service-account-signing-key-file") && e.contains("RSA"),
            "{e}"
        );
    }
}
