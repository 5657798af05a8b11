//! The scanned tags of each ImageRepository, on disk (`--storage-path`):
//! one file per repository, replaced atomically (written beside, synced,
//! renamed), so that a crash leaves the old file or the new one, never a
//! part. A rebuildable cache: a missing or unreadable file means "scan
//! again". Tags live here, not in memory and not in status, so memory grows
//! with repositories, not with tags.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One repository's last scan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredScan {
    /// The object's UID: a file left by a deleted object of the same name
    /// is not taken for the new one's.
    pub uid: String,
    /// `spec.image` the tags were read from.
    pub image: String,
    pub revision: String,
    /// The exclusion list applied.
    pub exclusion_list: Vec<String>,
    /// Descending by bytes, as Flux stores them.
    pub tags: Vec<String>,
}

/// The folder of scan files.
#[derive(Clone, Debug)]
pub struct TagStore {
    dir: PathBuf,
}

/// A name safe as a file name (Kubernetes names are DNS-1123, but a
/// hostile name must not reach outside the folder).
fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s != "."
        && s != ".."
}

impl TagStore {
    /// Opens (creates) the store under `storage/tags`, removing the
    /// temporary files a crash may have left.
    pub fn open(storage: &Path) -> std::io::Result<TagStore> {
        let dir = storage.join("tags");
        std::fs::create_dir_all(&dir)?;
        let store = TagStore { dir };
        store.remove_leftovers();
        Ok(store)
    }

    fn remove_leftovers(&self) {
        let Ok(namespaces) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for ns in namespaces.flatten() {
            let Ok(files) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for f in files.flatten() {
                if f.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }

    fn path(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        (safe(namespace) && safe(name))
            .then(|| self.dir.join(namespace).join(format!("{name}.json")))
    }

    /// The last scan of `namespace/name` made for the object `uid`.
    pub fn load(&self, namespace: &str, name: &str, uid: &str) -> Option<StoredScan> {
        let bytes = std::fs::read(self.path(namespace, name)?).ok()?;
        let scan: StoredScan = serde_json::from_slice(&bytes).ok()?;
        (scan.uid == uid).then_some(scan)
    }

    /// Replaces the scan of `namespace/name` atomically.
    pub fn save(&self, namespace: &str, name: &str, scan: &StoredScan) -> std::io::Result<()> {
        let path = self.path(namespace, name).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a Kubernetes name")
        })?;
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".tmp-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            serde_json::to_writer(&mut f, scan).map_err(std::io::Error::other)?;
            f.flush()?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename itself reaches the disk with the folder.
            std::fs::File::open(dir).and_then(|d| d.sync_all())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        if let Some(p) = self.path(namespace, name) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_uid_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = TagStore::open(dir.path()).unwrap();
        let scan = StoredScan {
            uid: "u1".into(),
            image: "ghcr.io/org/web".into(),
            revision: "r".into(),
            exclusion_list: vec![],
            tags: vec!["2".into(), "1".into()],
        };
        s.save("apps", "web", &scan).unwrap();
        assert_eq!(s.load("apps", "web", "u1"), Some(scan.clone()));
        // Another object of the same name does not get it.
        assert_eq!(s.load("apps", "web", "u2"), None);
        assert!(s.save("../x", "web", &scan).is_err());
        assert_eq!(s.load("apps", "../../etc", "u1"), None);
        // Leftovers of a crash go at the next open.
        std::fs::write(dir.path().join("tags/apps/.tmp-web-1-2"), b"{").unwrap();
        let s = TagStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("tags/apps/.tmp-web-1-2").exists());
        s.remove("apps", "web");
        assert_eq!(s.load("apps", "web", "u1"), None);
    }
}
