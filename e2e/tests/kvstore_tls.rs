//! TLS with rustls on client and peer URLs: a three-member group whose members talk
//! https to each other (peer certificates checked against the CA) serves clients that
//! present a certificate signed by the CA (the real etcdctl among them), and refuses
//! those that do not.

use e2e::kvstore::{Flavor, KvCluster, Options};
use e2e::pki::Pki;
use e2e::RunDir;
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use std::time::Duration;

fn options(ca: &str, identity: Option<(&str, &str)>) -> ConnectOptions {
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
}

#[test]
fn three_members_over_tls_refuse_clients_without_a_ca_signed_certificate() {
    let run = RunDir::temp("kvstore-tls").unwrap();
    let pki = Pki::create(&run.subdir("pki").unwrap()).unwrap();
    let serving = pki.serving("kvstore", "kvstore", &[]).unwrap();
    let admin = pki.client("admin", ("admin", &[])).unwrap();
    // A certificate from a CA the cluster does not trust.
    let other = Pki::create(&run.subdir("other-pki").unwrap()).unwrap();
    let stranger = other.client("stranger", ("stranger", &[])).unwrap();

    let mut kv = KvCluster::start(
        &run,
        Flavor::Kvstore,
        3,
        &Options {
            tls: Some((serving, pki.ca().cert.clone())),
            ..Default::default()
        },
    )
    .unwrap();
    let eps = kv.endpoints();
    assert!(eps.iter().all(|e| e.starts_with("https://")), "{eps:?}");
    let ca = pki.ca().cert_pem().unwrap();
    let (cert, key) = (admin.cert_pem().unwrap(), admin.key_pem().unwrap());
    let (scert, skey) = (stranger.cert_pem().unwrap(), stranger.key_pem().unwrap());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Written through one member, read linearizably from each: replicated over the
        // https peer URLs.
        let mut c = Client::connect([eps[0].clone()], Some(options(&ca, Some((&cert, &key)))))
            .await
            .unwrap();
        c.put("tls/k", "v", None).await.unwrap();
        for ep in &eps {
            let mut c = Client::connect([ep.clone()], Some(options(&ca, Some((&cert, &key)))))
                .await
                .unwrap();
            let r = c.get("tls/k", Some(GetOptions::new())).await.unwrap();
            assert_eq!(r.kvs()[0].value(), b"v", "{ep}");
        }
        // No client certificate: the handshake fails, nothing is served.
        let anonymous = async {
            let mut c = Client::connect([eps[0].clone()], Some(options(&ca, None))).await?;
            c.put("tls/anonymous", "x", None).await
        };
        assert!(
            anonymous.await.is_err(),
            "a client without a certificate was served"
        );
        // A certificate signed by another CA: refused too.
        let foreign = async {
            let mut c =
                Client::connect([eps[0].clone()], Some(options(&ca, Some((&scert, &skey)))))
                    .await?;
            c.put("tls/foreign", "x", None).await
        };
        assert!(
            foreign.await.is_err(),
            "a client with a foreign certificate was served"
        );
        // And neither write happened.
        let mut c = Client::connect([eps[1].clone()], Some(options(&ca, Some((&cert, &key)))))
            .await
            .unwrap();
        let r = c
            .get(
                "tls/",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        assert_eq!(r.kvs().len(), 1);
    });
    // The real etcdctl with the admin certificate and an https:// endpoint.
    let dir = run.subdir("etcdctl").unwrap();
    let files = [
        ("ca.pem", &ca),
        ("admin.pem", &cert),
        ("admin-key.pem", &key),
    ];
    for (name, pem) in files {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    for args in [&["endpoint", "status"][..], &["get", "tls/k"][..]] {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps[0]))
            .arg(format!("--cacert={}", dir.join("ca.pem").display()))
            .arg(format!("--cert={}", dir.join("admin.pem").display()))
            .arg(format!("--key={}", dir.join("admin-key.pem").display()))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    kv.stop().unwrap();
}
