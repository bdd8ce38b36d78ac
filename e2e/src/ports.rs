//! Run-unique free ports on 127.0.0.1.

use anyhow::{Context, Result};
use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before (the kernel may give the same ephemeral port twice in a row once it is released).
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no unused port found on 127.0.0.1 after 100 tries")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_unique() {
        let ports: Vec<u16> = (0..50).map(|_| super::free_port().unwrap()).collect();
        let set: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(set.len(), ports.len());
    }
}
