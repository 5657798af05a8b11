//! Writes the CRDs of `imageauto_core::api::crds` into a folder, one file per
//! CRD plus their kustomization (`make crds` runs it for `manifests/crds`):
//!
//!   gen-crds [DIR]      DIR defaults to the repository's manifests/crds
//!
//! YAML files in DIR that are not generated any more are removed.

use imageauto_core::api::crd_files;
use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = run() {
        eprintln!("gen-crds: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("the crate folder has no parent")?
            .join("manifests")
            .join("crds"),
    };
    std::fs::create_dir_all(&dir)?;
    let files = crd_files()?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".yaml") && !files.iter().any(|(f, _)| f == name) {
            std::fs::remove_file(&path)?;
            println!("removed {}", path.display());
        }
    }
    for (name, text) in &files {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
