//! Compiles every `proto/stockmesh/**.proto` with protox (pure Rust: no system `protoc`)
//! and generates tonic clients and servers through `tonic_prost_build`.
//!
//! It also writes `stockmesh_descriptor.bin`, a FileDescriptorSet *with imports and
//! source info*: the gateway reads the `google.api.http` rules from it, reflection serves
//! it, and OpenAPI takes comments from it. `protox::compile(..).encode_to_vec()` would
//! drop those custom options, so the set is encoded by protox itself.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let mut protos = Vec::new();
    collect_protos(&root.join("stockmesh"), &mut protos)?;
    protos.sort();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(&protos)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("stockmesh_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // prost needs every imported type (e.g. Timestamp) to decide derives, so it gets the
    // whole set; the google/api module it also writes is simply never included.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
