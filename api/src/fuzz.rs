//! Throws random, truncated and mutated input at every parser: each must return (Ok or
//! Err) and never panic.

use crate::{fields::FieldSelector, kubeconfig::Kubeconfig, labels::Selector, quantity::Quantity};
use rand::{rngs::StdRng, Rng, SeedableRng};

const SEEDS: &[&str] = &[
    "app=web,tier in (a,b),!canary,x notin (y),n>3",
    "metadata.name=a\\,b,spec.nodeName!=n1",
    "1.5Gi",
    "-100m",
    "2e-3",
    "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443,https://127.0.0.1:6444\nusers:\n- name: u\n  user:\n    token: abc\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
];
const ALPHABET: &[u8] = b"az09=!,()<>.-_/\\ \t:eEKMGimnu+\n\"'{}[]";

fn mutate(rng: &mut StdRng, s: &str) -> String {
    let mut b: Vec<u8> = s.as_bytes().to_vec();
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..4) {
            0 if !b.is_empty() => {
                let at = rng.gen_range(0..b.len());
                b.truncate(at);
            }
            1 if !b.is_empty() => {
                let at = rng.gen_range(0..b.len());
                b.remove(at);
            }
            2 => {
                let at = rng.gen_range(0..=b.len());
                b.insert(at, ALPHABET[rng.gen_range(0..ALPHABET.len())]);
            }
            _ if !b.is_empty() => {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.gen();
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn parsers_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for round in 0..20_000 {
        let input = if round % 5 == 0 {
            let len = rng.gen_range(0..24);
            (0..len)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        } else {
            mutate(&mut rng, SEEDS[round % SEEDS.len()])
        };
        if let Ok(sel) = Selector::parse(&input) {
            // Whatever parses must print back to something that parses the same way.
            assert_eq!(
                Selector::parse(&sel.to_string()).as_ref(),
                Ok(&sel),
                "{input:?}"
            );
        }
        if let Ok(sel) = FieldSelector::parse(&input) {
            assert_eq!(
                FieldSelector::parse(&sel.to_string()).as_ref(),
                Ok(&sel),
                "{input:?}"
            );
        }
        if let Ok(q) = Quantity::parse(&input) {
            let (_, _) = (q.to_milli().is_ok(), q.value().is_ok());
            let _ = q.to_string();
        }
        if let Ok(cfg) = Kubeconfig::from_yaml(&input) {
            let _ = cfg.resolve(None).is_ok();
        }
    }
}
