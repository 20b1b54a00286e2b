//! Embeds the dashboard (`web/`) in the binary: a table of every servable file with its bytes and
//! an ETag, written to `$OUT_DIR/web_assets.rs` and included by `src/web.rs`. Also rebuilds the
//! crate when a migration is added.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// File types the dashboard serves; anything else in `web/` (READMEs, licences, refresh scripts)
/// stays out of the binary.
const SERVED: [&str; 8] = ["html", "js", "css", "svg", "png", "ico", "woff2", "json"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("web");
    println!("cargo::rerun-if-changed={}", root.display());
    // `sqlx::migrate!` embeds the migrations, but on stable Rust a new migration file does not make
    // the crate build again: a changed folder must.
    for backend in ["sqlite", "postgres"] {
        println!("cargo::rerun-if-changed=migrations/{backend}");
    }
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (rel, abs) in &files {
        let bytes = std::fs::read(abs).map_err(|e| format!("reading {}: {e}", abs.display()))?;
        let digest = Sha256::digest(&bytes);
        let etag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(
            table,
            "    Asset {{ path: {rel:?}, body: include_bytes!({abs:?}), etag: \"\\\"{etag}\\\"\" }},",
            abs = abs.display().to_string(),
        );
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("web_assets.rs");
    std::fs::write(&out, table).map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(())
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
            continue;
        }
        let served = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| SERVED.contains(&e));
        if let (true, Ok(rel)) = (served, path.strip_prefix(root)) {
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push((rel, path.clone()));
        }
    }
}
