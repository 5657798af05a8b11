//! Applying the setters to a folder of files: which files are read, in
//! parallel, and how changed files are written (a temporary file renamed over
//! the original, so a file is either old or new, never half written).

use crate::api::ImageRef;
use crate::setters::{self, Change, MARKER_TOKEN};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the tree could not be walked at all.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is outside {root}: the path must stay inside the repository")]
    Outside { path: String, root: String },
}

/// A file that was not updated, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The changes in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChanges {
    /// Relative to the root.
    pub path: PathBuf,
    pub changes: Vec<Change>,
    pub before: String,
    pub after: String,
}

/// What [`update_tree`] did.
#[derive(Clone, Debug, Default)]
pub struct TreeReport {
    /// Files with changes, by path.
    pub files: Vec<FileChanges>,
    /// Files that contain markers but could not be read or parsed.
    pub skipped: Vec<Skipped>,
    /// Symbolic links that were not followed.
    pub links_not_followed: Vec<PathBuf>,
    /// Policies (`ns:name`) that at least one marker names.
    pub matched: BTreeSet<String>,
    /// Files that were read (contain the marker token).
    pub files_with_markers: usize,
}

impl TreeReport {
    pub fn changes(&self) -> usize {
        self.files.iter().map(|f| f.changes.len()).sum()
    }
}

/// Whether a file name is one the setters read: `*.yaml`, `*.yml`, `Kustomization`.
pub fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name == "Kustomization"
}

/// Lists the manifest files under `dir` (inside `root`), sorted. Symbolic
/// links to directories are not followed; links to files are followed only
/// when the file is inside `root`. `.git` folders are passed over.
pub fn manifest_files(root: &Path, dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), TreeError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| TreeError::Io { path, source }
    };
    let root = root.canonicalize().map_err(io(root))?;
    let start = dir.canonicalize().map_err(io(dir))?;
    if !start.starts_with(&root) {
        return Err(TreeError::Outside {
            path: dir.display().to_string(),
            root: root.display().to_string(),
        });
    }
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut seen = HashSet::new();
    if start.is_file() {
        files.push(start);
        return Ok((files, links));
    }
    let mut stack = vec![start];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .map_err(io(&d))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            let name = name.to_string_lossy();
            if ft.is_dir() {
                if name != ".git" {
                    stack.push(path);
                }
            } else if ft.is_symlink() {
                if !is_manifest_name(&name) {
                    continue;
                }
                match path.canonicalize() {
                    Ok(target) if target.is_file() && target.starts_with(&root) => {
                        if seen.insert(target.clone()) {
                            files.push(target);
                        }
                    }
                    _ => links.push(path),
                }
            } else if ft.is_file() && is_manifest_name(&name) && seen.insert(path.clone()) {
                files.push(path);
            }
        }
    }
    files.sort();
    links.sort();
    Ok((files, links))
}

/// Writes `content` to `path` through a temporary file in the same folder,
/// keeping the file's permissions: readers see the old or the new file, never
/// a part. (No fsync: the next commit records the files; a crash before it
/// loses nothing that the next run does not redo.)
pub fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let perms = std::fs::metadata(path).map(|m| m.permissions()).ok();
    let mut tmp = tempfile::Builder::new()
        .prefix(".imageauto-")
        .tempfile_in(dir)?;
    tmp.write_all(content.as_bytes())?;
    if let Some(p) = perms {
        tmp.as_file().set_permissions(p)?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

enum Outcome {
    NoMarkers,
    Unchanged(Vec<String>),
    Changed(FileChanges, Vec<String>),
    Skipped(Skipped),
}

/// What the setters make of one file's bytes.
pub(crate) enum Rewrite {
    /// No marker token: not a file with markers.
    NoMarkers,
    /// Left as it was, and why (not UTF-8, not YAML).
    Refused(String),
    /// Markers for these policies, all current.
    Unchanged(Vec<String>),
    /// Changed: the setters' result and the text before.
    Changed(setters::Applied, String),
}

/// Applies the setters to a file's bytes: the marker-token check, the text
/// check, the rewrite. Shared by the working-tree and Git paths.
pub(crate) fn rewrite(bytes: &[u8], images: &BTreeMap<String, ImageRef>) -> Rewrite {
    if memchr::memmem::find(bytes, MARKER_TOKEN.as_bytes()).is_none() {
        return Rewrite::NoMarkers;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Rewrite::Refused("not UTF-8 text, left as it was".into());
    };
    match setters::apply(text, images) {
        Err(e) => Rewrite::Refused(format!("not valid YAML, left as it was: {e}")),
        Ok(a) if a.text.is_none() => {
            Rewrite::Unchanged(a.matched.iter().map(|m| m.policy()).collect())
        }
        Ok(a) => Rewrite::Changed(a, text.to_string()),
    }
}

fn process(root: &Path, path: &Path, images: &BTreeMap<String, ImageRef>, write: bool) -> Outcome {
    let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Skipped(Skipped {
                path: rel,
                reason: format!("cannot read: {e}"),
            });
        }
    };
    let (applied, text) = match rewrite(&bytes, images) {
        Rewrite::NoMarkers => return Outcome::NoMarkers,
        Rewrite::Refused(reason) => return Outcome::Skipped(Skipped { path: rel, reason }),
        Rewrite::Unchanged(matched) => return Outcome::Unchanged(matched),
        Rewrite::Changed(a, text) => (a, text),
    };
    let matched = applied.matched.iter().map(|m| m.policy()).collect();
    let Some(after) = applied.text else {
        return Outcome::Unchanged(matched);
    };
    if write && let Err(e) = write_atomically(path, &after) {
        return Outcome::Skipped(Skipped {
            path: rel,
            reason: format!("cannot write: {e}"),
        });
    }
    Outcome::Changed(
        FileChanges {
            path: rel,
            changes: applied.changes,
            before: text,
            after,
        },
        matched,
    )
}

/// Applies the setters to every manifest under `dir` (which must be inside
/// `root`): `images` maps `ns:name` to the policy's latest image. With
/// `write`, changed files are replaced atomically; without, nothing is written.
pub fn update_tree(
    root: &Path,
    dir: &Path,
    images: &BTreeMap<String, ImageRef>,
    write: bool,
) -> Result<TreeReport, TreeError> {
    let (files, links) = manifest_files(root, dir)?;
    let root = root.canonicalize().map_err(|source| TreeError::Io {
        path: root.display().to_string(),
        source,
    })?;
    let results = super::par::map(&files, |path| process(&root, path, images, write));
    let mut report = TreeReport {
        links_not_followed: links,
        ..TreeReport::default()
    };
    for o in results {
        match o {
            Outcome::NoMarkers => {}
            Outcome::Unchanged(m) => {
                report.files_with_markers += 1;
                report.matched.extend(m);
            }
            Outcome::Changed(f, m) => {
                report.files_with_markers += 1;
                report.matched.extend(m);
                report.files.push(f);
            }
            Outcome::Skipped(s) => {
                report.files_with_markers += 1;
                report.skipped.push(s);
            }
        }
    }
    report.files.sort_by(|a, b| a.path.cmp(&b.path));
    report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}
