//! The PKI's certificates work for real TLS: a rustls server with a serving certificate
//! and a client trusting the CA complete a mutual-TLS handshake on 127.0.0.1; a client
//! certificate from another CA is refused. Kubeconfigs round-trip through the api parser.

use api::kubeconfig::Kubeconfig;
use base64::Engine;
use e2e::pki::{self, Pki};
use e2e::RunDir;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .unwrap()
        .unwrap()
}

fn roots(ca_pem: &str) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).unwrap();
    }
    Arc::new(roots)
}

/// Runs one TLS exchange: Ok(what the server read), or the first error either side saw.
fn exchange(server_pki: &Pki, client: (&str, &str), host: &str) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let serving = server_pki.serving("server", "kvstore0", &[]).unwrap();
    let ca = server_pki.ca().cert_pem().unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&ca), provider.clone())
            .build()
            .unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&serving.cert_pem().unwrap()),
            key(&serving.key_pem().unwrap()),
        )
        .unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&ca))
        .with_client_auth_cert(certs(client.0), key(client.1))
        .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || -> Result<String, String> {
        let (mut sock, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut conn =
            rustls::ServerConnection::new(Arc::new(server_cfg)).map_err(|e| e.to_string())?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    });
    let name = ServerName::try_from(host.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(client_cfg), name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    let client_result = {
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"hello").and_then(|_| tls.flush())
    };
    if client_result.is_err() {
        // Unblock the server if the client gave up mid-handshake.
        drop(sock);
    }
    let server_result = server.join().unwrap();
    client_result.map_err(|e| e.to_string())?;
    server_result
}

#[test]
fn mutual_tls_with_the_generated_certificates() {
    let run = RunDir::temp("pki-ok").unwrap();
    let pki = Pki::create(&run.path().join("pki")).unwrap();
    let admin = pki.client("admin", pki::ADMIN).unwrap();
    let client = (admin.cert_pem().unwrap(), admin.key_pem().unwrap());
    for host in ["127.0.0.1", "localhost"] {
        assert_eq!(
            exchange(&pki, (&client.0, &client.1), host).as_deref(),
            Ok("hello"),
            "{host}"
        );
    }
    // A name not in the SANs is refused by the client.
    assert!(exchange(&pki, (&client.0, &client.1), "example.com").is_err());
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let run = RunDir::temp("pki-foreign").unwrap();
    let pki = Pki::create(&run.path().join("pki")).unwrap();
    let other = Pki::create(&run.path().join("other")).unwrap();
    let intruder = other.client("intruder", pki::ADMIN).unwrap();
    let result = exchange(
        &pki,
        (&intruder.cert_pem().unwrap(), &intruder.key_pem().unwrap()),
        "127.0.0.1",
    );
    assert!(result.is_err(), "{result:?}");
}

#[test]
fn kubeconfigs_round_trip_and_carry_the_credentials() {
    let run = RunDir::temp("pki-kubeconfig").unwrap();
    let pki = Pki::create(&run.path().join("pki")).unwrap();
    let admin = pki.client("admin", pki::ADMIN).unwrap();
    let servers = vec![
        "https://127.0.0.1:6443".to_string(),
        "https://127.0.0.1:6444".to_string(),
    ];
    let cfg = pki
        .kubeconfig(&servers, "kubernetes-admin", &admin)
        .unwrap();
    let path = run.path().join("kubeconfig");
    pki::write_kubeconfig(&path, &cfg).unwrap();

    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&admin.key), 0o600);

    let parsed = Kubeconfig::load(&path).unwrap();
    assert_eq!(parsed, cfg);
    let resolved = parsed.resolve(None).unwrap();
    assert_eq!(resolved.servers, servers);
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |s: &Option<String>| String::from_utf8(b64.decode(s.as_ref().unwrap()).unwrap());
    assert_eq!(
        decode(&resolved.user.client_certificate_data).unwrap(),
        admin.cert_pem().unwrap()
    );
    assert_eq!(
        decode(&resolved.cluster.certificate_authority_data).unwrap(),
        pki.ca().cert_pem().unwrap()
    );
}
