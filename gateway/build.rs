//! Embeds the web console's built bundle (`web/dist/`, committed) into the gateway: writes
//! `$OUT_DIR/console_assets.rs` with one `include_bytes!` per file, so a fresh clone needs
//! only cargo (no npm) to serve the console. Without `web/dist/` the table is empty and the
//! gateway says so at `/`.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dist = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &mut files)?;
    }
    files.sort();
    let mut out = String::from(
        "/// Every file of web/dist: (URL path, contents), sorted by path.\npub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&dist)?.to_string_lossy().replace('\\', "/");
        let abs = f.canonicalize()?;
        out.push_str(&format!(
            "    ({:?}, include_bytes!({:?})),\n",
            format!("/{rel}"),
            abs.display().to_string()
        ));
    }
    out.push_str("];\n");
    std::fs::write(
        PathBuf::from(std::env::var("OUT_DIR")?).join("console_assets.rs"),
        out,
    )?;
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
