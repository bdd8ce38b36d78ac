//! A small HTTPS client for tests and benchmarks that talk REST to the apiserver the way
//! a program would (kubectl covers the human path): one HTTP/1.1 connection, TLS
//! verified against the cluster CA, a bearer token.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub struct HttpsClient {
    sender: SendRequest<Full<Bytes>>,
    token: String,
    host: String,
}

/// A rustls client config trusting only `ca_file`.
pub fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

impl HttpsClient {
    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        token: &str,
    ) -> Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpsClient {
            sender,
            token: token.to_string(),
            host: addr.to_string(),
        })
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<hyper::Request<Full<Bytes>>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json");
        let body = match body {
            Some((ct, bytes)) => {
                b = b.header("content-type", ct);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        Ok(b.body(Full::new(body))?)
    }

    /// One request; returns the status code and the whole body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, Bytes)> {
        let req = self.build(method, path, body)?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((code, body))
    }

    /// A JSON request whose answer must be `want`; returns the body as JSON.
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        want: u16,
    ) -> Result<serde_json::Value> {
        let body = body.map(|b| {
            (
                "application/json",
                serde_json::to_vec(b).unwrap_or_default(),
            )
        });
        let (code, bytes) = self.request(method, path, body).await?;
        if code != want {
            bail!(
                "{method} {path}: expected {want}, got {code}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Starts a streaming GET (a watch); lines arrive through the returned receiver.
    pub async fn lines(mut self, path: &str) -> Result<(u16, tokio::sync::mpsc::Receiver<String>)> {
        let req = self.build("GET", path, None)?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let code = resp.status().as_u16();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut body = resp.into_body();
        tokio::spawn(async move {
            let _keep = self; // the connection lives as long as the stream
            let mut buf = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    if tx
                        .send(String::from_utf8_lossy(&line).trim_end().to_string())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok((code, rx))
    }
}
