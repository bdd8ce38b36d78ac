//! Service account tokens: the JWTs the apiserver issues for
//! `serviceaccounts/<name>/token` (TokenRequest, `kubectl create token`) and accepts as
//! bearer tokens, as Kubernetes' bound service account tokens.
//!
//! Tokens are signed with `--service-account-signing-key-file`, ES256 for an ECDSA P-256
//! key or RS256 for an RSA key (kubeadm's `sa.key`), and checked against that key and
//! any in `--service-account-key-file` (public or private, PEM). A token names its
//! service account by name and uid: it stops working when that account is deleted (even
//! if one of the same name is made again), when it expires, or when its audiences do not
//! include the apiserver's (`--service-account-issuer`). A token bound to a pod, a
//! secret or a node (`kubectl create token --bound-object-kind`) also stops working when
//! that object (same uid) is gone.

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The object a token is bound to (`--bound-object-kind`): it works only while
    /// that object exists.
    pub bound: Option<Bound>,
}

/// An object a token is bound to: a pod or secret of the account's namespace, or a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub kind: BoundKind,
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    Pod,
    Secret,
    Node,
}

impl BoundKind {
    pub const ALL: [BoundKind; 3] = [BoundKind::Pod, BoundKind::Secret, BoundKind::Node];

    /// The kind as `boundObjectRef.kind` names it.
    pub fn kind(self) -> &'static str {
        match self {
            BoundKind::Pod => "Pod",
            BoundKind::Secret => "Secret",
            BoundKind::Node => "Node",
        }
    }

    /// The core resource, which is also the token's claim name.
    pub fn resource(self) -> &'static str {
        match self {
            BoundKind::Pod => "pods",
            BoundKind::Secret => "secrets",
            BoundKind::Node => "nodes",
        }
    }

    fn claim(self) -> &'static str {
        match self {
            BoundKind::Pod => "pod",
            BoundKind::Secret => "secret",
            BoundKind::Node => "node",
        }
    }
}

/// The two JWS algorithms: the key kinds Kubernetes' service account keys come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Es256,
    Rs256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }
}

/// A verification key: its id, algorithm and public key (an uncompressed P-256 point,
/// or a PKCS#1 RSAPublicKey).
struct PublicKey {
    id: String,
    alg: Alg,
    der: Vec<u8>,
}

impl PublicKey {
    fn new(alg: Alg, der: Vec<u8>) -> Self {
        let id = B64.encode(ring::digest::digest(&ring::digest::SHA256, &der));
        PublicKey { id, alg, der }
    }
}

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

pub struct Tokens {
    issuer: String,
    signer: Option<(Signer, Alg, String)>,
    keys: Vec<PublicKey>,
    rng: SystemRandom,
}

/// The keys of a PEM file: each key's public half, and its first private key.
struct KeyFile {
    public: Vec<PublicKey>,
    private: Option<Signer>,
}

/// A private key as a signer: PKCS#8 (P-256 or RSA) or PKCS#1 (RSA).
fn signer(item: &rustls_pemfile::Item) -> Option<(Signer, PublicKey)> {
    let rng = SystemRandom::new();
    match item {
        rustls_pemfile::Item::Pkcs8Key(k) => {
            let der = k.secret_pkcs8_der();
            if let Ok(ec) =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            {
                let public = PublicKey::new(Alg::Es256, ec.public_key().as_ref().to_vec());
                return Some((Signer::Ec(ec), public));
            }
            let rsa = RsaKeyPair::from_pkcs8(der).ok()?;
            let public = PublicKey::new(Alg::Rs256, rsa.public().as_ref().to_vec());
            Some((Signer::Rsa(rsa), public))
        }
        rustls_pemfile::Item::Pkcs1Key(k) => {
            let rsa = RsaKeyPair::from_der(k.secret_pkcs1_der()).ok()?;
            let public = PublicKey::new(Alg::Rs256, rsa.public().as_ref().to_vec());
            Some((Signer::Rsa(rsa), public))
        }
        _ => None,
    }
}

/// A public key (SPKI): P-256 or RSA.
fn public_key(spki: &[u8]) -> Option<PublicKey> {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).ok()?;
    let key = info.subject_public_key.data.to_vec();
    match info.algorithm.algorithm.to_id_string().as_str() {
        // id-ecPublicKey on prime256v1: the key is the uncompressed point.
        "1.2.840.10045.2.1" if key.len() == 65 && key[0] == 0x04 => {
            Some(PublicKey::new(Alg::Es256, key))
        }
        // rsaEncryption: the key is a PKCS#1 RSAPublicKey.
        "1.2.840.113549.1.1.1" => Some(PublicKey::new(Alg::Rs256, key)),
        _ => None,
    }
}

fn read_keys(flag: &str, path: &Path) -> anyhow::Result<KeyFile> {
    let pem = std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))?;
    let mut file = KeyFile {
        public: Vec::new(),
        private: None,
    };
    let unsupported = || {
        anyhow::anyhow!(
            "{flag}: a key in {} is neither ECDSA P-256 nor RSA (2048 bits or more)",
            path.display()
        )
    };
    for item in rustls_pemfile::read_all(&mut pem.as_slice()) {
        let item = item.with_context(|| format!("{flag}: {} is not PEM", path.display()))?;
        match &item {
            rustls_pemfile::Item::Pkcs8Key(_) | rustls_pemfile::Item::Pkcs1Key(_) => {
                let (sign, public) = signer(&item).ok_or_else(unsupported)?;
                file.public.push(public);
                file.private.get_or_insert(sign);
            }
            rustls_pemfile::Item::Sec1Key(_) => bail!(
                "{flag}: {} holds an \"EC PRIVATE KEY\"; give it as PKCS#8 (\"PRIVATE KEY\")",
                path.display()
            ),
            rustls_pemfile::Item::SubjectPublicKeyInfo(spki) => {
                file.public
                    .push(public_key(spki.as_ref()).ok_or_else(unsupported)?);
            }
            _ => {}
        }
    }
    if file.public.is_empty() {
        bail!("{flag}: no key in {}", path.display());
    }
    Ok(file)
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
            let mut file = read_keys(flag, path)?;
            let sign = file
                .private
                .take()
                .with_context(|| format!("{flag}: {} holds no private key", path.display()))?;
            let public = file.public.swap_remove(0);
            t.signer = Some((sign, public.alg, public.id.clone()));
            t.keys.push(public);
        }
        for path in keys {
            t.keys
                .extend(read_keys("--service-account-key-file", path)?.public);
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
        let Some((key, alg, id)) = &self.signer else {
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
        let header = json!({"alg": alg.name(), "kid": id});
        let body = json!({
            "iss": self.issuer, "aud": aud, "exp": exp, "iat": now, "nbf": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            "kubernetes.io": {"namespace": claims.namespace,
                "serviceaccount": {"name": claims.name, "uid": claims.uid}},
        });
        let mut body = body;
        if let Some(b) = &claims.bound {
            body["kubernetes.io"][b.kind.claim()] = json!({"name": b.name, "uid": b.uid});
        }
        let signed = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(body.to_string())
        );
        let failed = |_| "signing the token failed".to_string();
        let sig = match key {
            Signer::Ec(k) => k
                .sign(&self.rng, signed.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Signer::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    signed.as_bytes(),
                    &mut out,
                )
                .map_err(failed)?;
                out
            }
        };
        Ok((format!("{signed}.{}", B64.encode(&sig)), exp))
    }

    /// The claims of a token this apiserver accepts at `now`, or None.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, b, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        let sig = B64.decode(s).ok()?;
        let signed = &token[..h.len() + 1 + b.len()];
        let kid = header["kid"].as_str();
        let verified = self
            .keys
            .iter()
            .filter(|k| header["alg"] == k.alg.name() && kid.is_none_or(|id| id == k.id))
            .any(|k| {
                let alg: &dyn signature::VerificationAlgorithm = match k.alg {
                    Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                };
                signature::UnparsedPublicKey::new(alg, &k.der)
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
            bound: BoundKind::ALL.into_iter().find_map(|kind| {
                let o = &k[kind.claim()];
                Some(Bound {
                    kind,
                    name: o["name"].as_str()?.to_string(),
                    uid: o["uid"].as_str().unwrap_or("").to_string(),
                })
            }),
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
            bound: None,
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
        // The object a token is bound to comes back as it was bound.
        for kind in BoundKind::ALL {
            let bound = Claims {
                bound: Some(Bound {
                    kind,
                    name: "holder".into(),
                    uid: "u-2".into(),
                }),
                ..who.clone()
            };
            let (token, _) = t.issue(&bound, &[], 1_000, 3_600).unwrap();
            assert_eq!(t.verify(&token, 1_001), Some(bound));
        }
    }

    #[test]
    fn rsa_keys_sign_rs256_and_their_public_half_verifies() {
        // A throwaway 2048-bit key, as kubeadm's sa.key (PKCS#1) and sa.pub (SPKI).
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let signer = Tokens::load("https://k", Some(&data.join("sa-rsa.key")), &[])
            .unwrap()
            .unwrap();
        let who = Claims {
            namespace: "dev".into(),
            name: "builder".into(),
            uid: "u-1".into(),
            bound: None,
        };
        let (token, _) = signer.issue(&who, &[], 1_000, 3_600).unwrap();
        let header: Value =
            serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(signer.verify(&token, 1_001), Some(who.clone()));
        // Another apiserver holding only the public key accepts it.
        let verifier = Tokens::load("https://k", None, &[data.join("sa-rsa.pub")])
            .unwrap()
            .unwrap();
        assert_eq!(verifier.verify(&token, 1_001), Some(who));
        assert!(verifier
            .issue(
                &Claims {
                    namespace: "a".into(),
                    name: "b".into(),
                    uid: "c".into(),
                    bound: None,
                },
                &[],
                0,
                600
            )
            .is_err());
    }

    #[test]
    fn keys_of_other_kinds_are_refused_by_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        let ec = rcgen::KeyPair::generate().unwrap();
        // The same key as SEC1 ("EC PRIVATE KEY"): refused with the remedy.
        let der = ec.serialize_der();
        let pem = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        std::fs::write(&path, pem).unwrap();
        let e = Tokens::load("x", Some(&path), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--service-account-signing-key-file") && e.contains("PKCS#8"),
            "{e}"
        );
        std::fs::write(&path, "not a key\n").unwrap();
        let e = Tokens::load("x", Some(&path), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no key"), "{e}");
    }
}
