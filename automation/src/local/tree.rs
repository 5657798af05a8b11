//! Applying the setters to a folder of files: which files are read, in
//! parallel, and how changed files are written (a temporary file renamed over
//! the original, so a file is either old or new, never half written).

use crate::api::ImageRef;
pub use crate::setters::{FileChanges, is_manifest_name};
use crate::setters::{Rewrite, rewrite};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::Permissions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest file read as a manifest (or a tags file): far above any real
/// manifest, and a bound on what a device or a runaway file can make us read.
pub const MAX_FILE_BYTES: u64 = 128 << 20;

/// Why the tree could not be walked at all, or a file not read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} is outside {root}: the path must stay inside the repository")]
    Outside { path: String, root: String },
    #[error("{path} is {what}, not a regular file: only regular files are read")]
    NotRegular { path: String, what: &'static str },
    #[error("{path} is larger than {cap} bytes: not read")]
    TooLarge { path: String, cap: u64 },
}

/// What a file is, for messages about files that are not read.
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Reads a regular file of at most `cap` bytes. A FIFO, a device or a socket
/// is refused before anything is read from it: the file is opened without
/// blocking (the open of a FIFO would wait for a writer; a socket cannot be
/// opened), then looked at.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, TreeError> {
    read_regular_file(path, cap).map(|(bytes, _)| bytes)
}

/// [`read_regular`], with the file's permissions as it was read.
fn read_regular_file(path: &Path, cap: u64) -> Result<(Vec<u8>, Permissions), TreeError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = || path.display().to_string();
    let io = |error| TreeError::Io {
        path: shown(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(TreeError::NotRegular {
            path: shown(),
            what: file_kind(&meta.file_type()),
        });
    }
    if meta.len() > cap {
        return Err(TreeError::TooLarge { path: shown(), cap });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(TreeError::TooLarge { path: shown(), cap });
    }
    Ok((bytes, meta.permissions()))
}

/// An entry of a tree that was not read, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRead {
    pub path: PathBuf,
    pub reason: String,
}

/// The manifests of a tree, and what was passed over.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Manifest files, sorted.
    pub files: Vec<PathBuf>,
    /// Symbolic links not followed, FIFOs, devices and sockets with manifest
    /// names: each with the reason.
    pub not_read: Vec<NotRead>,
}

/// A file that was not updated, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What [`update_tree`] did.
#[derive(Clone, Debug, Default)]
pub struct TreeReport {
    /// Files with changes, by path. Their texts (`before`, `after`) are
    /// kept only when nothing was written (a dry run shows them as diffs);
    /// once a file is written they are empty, so that a run over many files
    /// does not hold them all at once.
    pub files: Vec<FileChanges>,
    /// Files that contain markers but could not be read or parsed.
    pub skipped: Vec<Skipped>,
    /// Symbolic links not followed, and special files, with the reason.
    pub not_read: Vec<NotRead>,
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

/// Lists the manifest files under `dir` (inside `root`), sorted. Symbolic
/// links to directories are not followed; links to files are followed only
/// when the file is inside `root`. `.git` folders are passed over. Only
/// regular files are listed: a FIFO, device or socket with a manifest name is
/// noted; given as `dir` itself, it is an error.
pub fn manifest_files(root: &Path, dir: &Path) -> Result<Listing, TreeError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| TreeError::Io { path, error }
    };
    let root = root.canonicalize().map_err(io(root))?;
    let start = dir.canonicalize().map_err(io(dir))?;
    if !start.starts_with(&root) {
        return Err(TreeError::Outside {
            path: dir.display().to_string(),
            root: root.display().to_string(),
        });
    }
    let mut listing = Listing::default();
    let meta = std::fs::metadata(&start).map_err(io(dir))?;
    if !meta.is_dir() {
        if !meta.is_file() {
            return Err(TreeError::NotRegular {
                path: dir.display().to_string(),
                what: file_kind(&meta.file_type()),
            });
        }
        listing.files.push(start);
        return Ok(listing);
    }
    // A folder's entries, sorted by name: walked depth first in that order
    // (each folder with how many of its entries were taken), the files come
    // out sorted as paths are.
    let sorted = |d: &Path| -> Result<Vec<(std::ffi::OsString, std::fs::DirEntry)>, TreeError> {
        let mut entries: Vec<_> = std::fs::read_dir(d)
            .map_err(io(d))?
            .filter_map(Result::ok)
            .map(|e| (e.file_name(), e))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    };
    let mut stack = vec![(sorted(&start)?, 0usize)];
    // Files reached through a link, which may be listed twice.
    let mut linked = false;
    while let Some((entries, next)) = stack.last_mut() {
        let Some((name, e)) = entries.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        let Ok(ft) = e.file_type() else { continue };
        let name = name.to_string_lossy();
        if ft.is_dir() {
            if name != ".git" {
                let inner = sorted(&e.path())?;
                stack.push((inner, 0));
            }
        } else if ft.is_symlink() {
            if !is_manifest_name(&name) {
                continue;
            }
            let path = e.path();
            let reason = match (path.canonicalize(), std::fs::metadata(&path)) {
                (Ok(target), Ok(m)) if m.is_file() && target.starts_with(&root) => {
                    listing.files.push(target);
                    linked = true;
                    continue;
                }
                (Err(_), _) | (_, Err(_)) => {
                    "symbolic link to nothing (its target does not exist), not followed".into()
                }
                (Ok(_), Ok(m)) if m.is_dir() => "symbolic link to a folder, not followed".into(),
                (Ok(target), Ok(_)) if !target.starts_with(&root) => format!(
                    "symbolic link leads out of {}, not followed",
                    root.display()
                ),
                (Ok(_), Ok(m)) => format!(
                    "symbolic link to {}, not followed",
                    file_kind(&m.file_type())
                ),
            };
            listing.not_read.push(NotRead { path, reason });
        } else if ft.is_file() {
            if is_manifest_name(&name) {
                listing.files.push(e.path());
            }
        } else if is_manifest_name(&name) {
            listing.not_read.push(NotRead {
                path: e.path(),
                reason: format!("{}, not read", file_kind(&ft)),
            });
        }
    }
    if linked {
        listing.files.sort();
        listing.files.dedup();
    }
    listing.not_read.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// A small pool for file writes and renames, whose time is the kernel's (a
/// rename over an existing file waits on the file system): more threads than
/// cores overlap that waiting. Built once; rayon's global pool when it
/// cannot be.
pub(crate) fn write_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .thread_name(|i| format!("imageauto-write-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Temporary files being written now, so that a signal handler can remove
/// them before the process ends ([`remove_temporary_files_and`]); and whether the
/// process is ending. A temporary file is created while this lock is held,
/// so no file can appear once the handler holds it.
static LIVE_TEMPORARIES: std::sync::Mutex<(bool, BTreeSet<PathBuf>)> =
    std::sync::Mutex::new((false, BTreeSet::new()));

fn live() -> std::sync::MutexGuard<'static, (bool, BTreeSet<PathBuf>)> {
    match LIVE_TEMPORARIES.lock() {
        Ok(l) => l,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Removes the temporary files that writes in progress have created, and
/// keeps new ones from being created until `end` returns: for a signal
/// handler, whose `end` ends the process (the lock is held meanwhile). No
/// write leaves a partial file behind.
pub fn remove_temporary_files_and(end: impl FnOnce()) {
    let mut live = live();
    live.0 = true;
    for p in live.1.iter() {
        let _ = std::fs::remove_file(p);
    }
    end();
}

/// A temporary file beside `target`, created and recorded under the lock of
/// [`LIVE_TEMPORARIES`]; forgotten (and removed, unless it was renamed) when
/// dropped.
struct Temporary {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Temporary {
    /// A new file in `dir`, created with `mode` (less the umask).
    fn create(dir: &Path, mode: u32) -> std::io::Result<Temporary> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut live = live();
        if live.0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the process is ending",
            ));
        }
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = dir.join(format!(".imageauto-{}-{n}-{nanos:08x}", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(file) => {
                    live.1.insert(path.clone());
                    return Ok(Temporary {
                        path,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Renames the file over `target`.
    fn persist(mut self, target: &Path) -> std::io::Result<()> {
        drop(self.file.take());
        std::fs::rename(&self.path, target)?;
        live().1.remove(&self.path);
        Ok(())
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        let mut live = live();
        if live.1.remove(&self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `content` to `path` through a temporary file in the same folder,
/// keeping the file's permissions: readers see the old or the new file, never
/// a part. A file that is read-only (no write permission bit) or that this
/// user may not write is left as it is, with an error: a rename would replace
/// it regardless of its permissions. The temporary file never outlives a
/// failure, and a signal handler can remove it ([`remove_temporary_files_and`]).
/// (No fsync: the next commit records the files; a crash before it loses
/// nothing that the next run does not redo.)
pub fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) => replace_file(path, content, Some(m.permissions())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => replace_file(path, content, None),
        Err(e) => Err(e),
    }
}

/// [`write_atomically`] for a file whose permissions are known already
/// (`None`: there is no such file yet).
fn replace_file(path: &Path, content: &str, known: Option<Permissions>) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let perms = match known {
        Some(p) => {
            if p.readonly() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the file is read-only (no write permission): left as it is; make it writable to let it be updated",
                ));
            }
            // Asks the kernel whether this user may write it.
            rustix::fs::access(path, rustix::fs::Access::WRITE_OK).map_err(|e| {
                let e = std::io::Error::from(e);
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "this user may not write the file ({}): left as it is",
                        io_text(&e)
                    ),
                )
            })?;
            Some(p)
        }
        None => None,
    };
    use std::os::unix::fs::PermissionsExt;
    // Created with the file's mode: where the umask (or the folder's default
    // ACL) takes none of its bits away, that is the mode already, and the
    // inode is not changed again.
    let mode = perms.as_ref().map_or(0o666, |p| p.mode() & 0o777);
    let mut tmp = Temporary::create(dir, mode)?;
    if let Some(f) = tmp.file.as_mut() {
        f.write_all(content.as_bytes())?;
        if let Some(p) = perms
            && f.metadata()?.permissions().mode() & 0o7777 != p.mode() & 0o7777
        {
            f.set_permissions(p)?;
        }
    }
    tmp.persist(path)
}

/// An I/O error's text without Rust's ` (os error N)` suffix.
pub fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// An error's text without the path it starts with (the caller names the
/// file already).
fn strip_path(message: &str, path: &Path) -> String {
    let p = format!("{}: ", path.display());
    message.strip_prefix(&p).unwrap_or(message).to_string()
}

enum Processed {
    NoMarkers,
    Unchanged(Vec<String>),
    Changed(FileChanges, Vec<String>),
    Skipped(Skipped),
}

fn process(
    root: &Path,
    path: &Path,
    images: &BTreeMap<String, ImageRef>,
    write: bool,
) -> Processed {
    let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    let (bytes, permissions) = match read_regular_file(path, MAX_FILE_BYTES) {
        Ok(b) => b,
        Err(e) => {
            return Processed::Skipped(Skipped {
                path: rel,
                reason: format!("cannot read: {}", strip_path(&e.to_string(), path)),
            });
        }
    };
    let (applied, text) = match rewrite(&bytes, images) {
        Rewrite::NoMarkers => return Processed::NoMarkers,
        Rewrite::Refused(reason) => return Processed::Skipped(Skipped { path: rel, reason }),
        Rewrite::Unchanged(matched) => return Processed::Unchanged(matched),
        Rewrite::Changed(a, text) => (a, text),
    };
    let matched = applied.matched.iter().map(|m| m.policy()).collect();
    let Some(after) = applied.text else {
        return Processed::Unchanged(matched);
    };
    let (before, after) = if write {
        if let Err(e) = replace_file(path, &after, Some(permissions)) {
            return Processed::Skipped(Skipped {
                path: rel,
                reason: format!("cannot write: {e}"),
            });
        }
        (String::new(), String::new())
    } else {
        (text, after)
    };
    Processed::Changed(
        FileChanges {
            path: rel,
            changes: applied.changes,
            before,
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
    let listing = manifest_files(root, dir)?;
    let root = root.canonicalize().map_err(|error| TreeError::Io {
        path: root.display().to_string(),
        error,
    })?;
    let results: Vec<Processed> = listing
        .files
        .par_iter()
        .map(|path| process(&root, path, images, write))
        .collect();
    let mut report = TreeReport {
        not_read: listing
            .not_read
            .into_iter()
            .map(|n| NotRead {
                path: n
                    .path
                    .strip_prefix(&root)
                    .map(Path::to_path_buf)
                    .unwrap_or(n.path),
                reason: n.reason,
            })
            .collect(),
        ..TreeReport::default()
    };
    for o in results {
        match o {
            Processed::NoMarkers => {}
            Processed::Unchanged(m) => {
                report.files_with_markers += 1;
                report.matched.extend(m);
            }
            Processed::Changed(f, m) => {
                report.files_with_markers += 1;
                report.matched.extend(m);
                report.files.push(f);
            }
            Processed::Skipped(s) => {
                report.files_with_markers += 1;
                report.skipped.push(s);
            }
        }
    }
    report.files.sort_by(|a, b| a.path.cmp(&b.path));
    report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A rewritten file keeps its mode, whether or not the umask would have
    /// taken bits of it away from a new file.
    #[test]
    fn a_rewritten_file_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let text = "image: app:1.0.0 # {\"$imagepolicy\": \"ns:app\"}\n";
        let modes = [0o600, 0o640, 0o644, 0o664, 0o666, 0o755, 0o777, 0o4755];
        for mode in modes {
            let path = dir.path().join(format!("m{mode:o}.yaml"));
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        }
        let images = BTreeMap::from([(
            "ns:app".to_string(),
            ImageRef {
                name: "app".into(),
                tag: "2.0.0".into(),
                digest: None,
            },
        )]);
        let report = update_tree(dir.path(), dir.path(), &images, true).unwrap();
        assert_eq!(report.files.len(), modes.len(), "{report:?}");
        for mode in modes {
            let path = dir.path().join(format!("m{mode:o}.yaml"));
            assert!(
                std::fs::read_to_string(&path)
                    .unwrap()
                    .contains("app:2.0.0")
            );
            let now = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(now, mode, "{}: {now:o}", path.display());
        }
        // And a new file gets what a new file gets.
        let new = dir.path().join("new.yaml");
        write_atomically(&new, text).unwrap();
        let made = dir.path().join("made.yaml");
        std::fs::write(&made, text).unwrap();
        assert_eq!(
            std::fs::metadata(&new).unwrap().permissions().mode(),
            std::fs::metadata(&made).unwrap().permissions().mode()
        );
    }
}
