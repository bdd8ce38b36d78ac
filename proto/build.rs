//! Compiles every `.proto` file under `proto/` with the vendored `protoc`, so a fresh
//! machine without a system protoc can build the workspace.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // tonic-prost-build reads PROTOC; setting it here only affects this build script.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let root = PathBuf::from("proto");
    let files = proto_files(&root)?;
    // The directories too, so adding a .proto file triggers a rebuild.
    println!("cargo:rerun-if-changed=proto");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Objects are passed through untouched: `Bytes` lets one serialized event go
        // to every watcher without a copy.
        .bytes(".apiserver.v1")
        // Snapshot chunks are slices of one buffer, sent without copying.
        .bytes(".kvstorepb.RaftEnvelope.chunk")
        .compile_protos(&files, &[root])?;
    Ok(())
}

fn proto_files(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(proto_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}
