//! The serving certificate: `DIR/tls.crt` and `DIR/tls.key` (PEM), read at
//! start and again whenever their bytes change (cert-manager or a Secret
//! rotation), without a restart. An empty (or missing) DIR gets a new CA and
//! a serving certificate signed by it, whose names cover the given DNS
//! names, `localhost` and `127.0.0.1`; the CA goes to `DIR/ca.crt` for the
//! caBundle of the ValidatingWebhookConfiguration and for local clients.
//!
//! The generated certificates are ECDSA P-256, valid from an hour ago for
//! ten years; the CA's key is not kept (a new folder gets a new CA).

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The CA certificate written beside a generated serving certificate.
pub const CA_FILE: &str = "ca.crt";
/// The serving certificate chain, leaf first.
pub const CERT_FILE: &str = "tls.crt";
/// The serving certificate's private key.
pub const KEY_FILE: &str = "tls.key";

/// A problem with the certificate folder or its files.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("{} and {} do not belong together: {source}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "{} holds {present} but not {missing}: the serving certificate needs both tls.crt and tls.key",
        dir.display()
    )]
    Incomplete {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    #[error(
        "{} has no tls.crt and tls.key but is not empty (it holds {entry:?}): put the serving certificate there, or give an empty folder to have one generated",
        dir.display()
    )]
    NotEmpty { dir: PathBuf, entry: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A generated CA and serving certificate, PEM.
#[derive(Clone, Debug)]
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names a generated serving certificate covers: `dns_names`, then
/// `localhost` and `127.0.0.1`, without duplicates or empty names.
pub fn subject_alt_names(dns_names: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for n in dns_names
        .iter()
        .map(|n| n.trim().to_string())
        .chain(["localhost".to_string(), "127.0.0.1".to_string()])
    {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Creates a CA and a serving certificate it signs for
/// [`subject_alt_names`]`(dns_names)`.
pub fn generate(dns_names: &[String]) -> Result<Generated, CertError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::days(3650);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "imageauto webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let names = subject_alt_names(dns_names);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.clone())?;
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("imageauto-webhook", String::as_str),
    );
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `data` to `path` through a temporary file and a rename, so that a
/// reader never sees half a file.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // The mode of open() applies only to a new file.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Makes sure `dir` holds a serving certificate: when it is missing or
/// empty, generates one (see [`generate`]) and writes `ca.crt`, `tls.crt`
/// and `tls.key` (mode 0600). Returns whether it generated. A folder with
/// one of the two files, or with other files only, is an error.
pub fn ensure(dir: &Path, dns_names: &[String]) -> Result<bool, CertError> {
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (true, false) => {
            return Err(CertError::Incomplete {
                dir: dir.into(),
                present: CERT_FILE,
                missing: KEY_FILE,
            });
        }
        (false, true) => {
            return Err(CertError::Incomplete {
                dir: dir.into(),
                present: KEY_FILE,
                missing: CERT_FILE,
            });
        }
        (false, false) => {}
    }
    if dir.exists() {
        if let Some(entry) = fs::read_dir(dir).map_err(io(dir))?.next() {
            let entry = entry.map_err(io(dir))?;
            return Err(CertError::NotEmpty {
                dir: dir.into(),
                entry: entry.file_name().to_string_lossy().into_owned(),
            });
        }
    } else {
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    let g = generate(dns_names)?;
    write_atomic(&key, g.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert, g.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&dir.join(CA_FILE), g.ca_pem.as_bytes(), 0o644)?;
    Ok(true)
}

/// The ring provider, the only one the webhook uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and key into a key rustls can serve,
/// checking that the key is the certificate's.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem {
            path: cert_path.into(),
            message: format!("not a PEM certificate chain: {e}"),
        })?;
    if chain.is_empty() {
        return Err(CertError::Pem {
            path: cert_path.into(),
            message: "holds no certificate".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::Pem {
        path: key_path.into(),
        message: format!("not a PEM private key: {e}"),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| CertError::Mismatch {
        cert: cert_path.into(),
        key: key_path.into(),
        source,
    })
}

/// The files' bytes, as last read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Serves the current certificate to every handshake, whatever the SNI (or
/// none), and swaps it when [`CertResolver::reload`] finds new files.
#[derive(Debug)]
pub struct CertResolver {
    dir: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files behind `current`, and the last bytes that failed to load
    /// (so that a broken pair is reported once, not every second).
    seen: RwLock<(Snapshot, Option<Snapshot>)>,
    /// How many times [`CertResolver::reload`] read both files.
    reads: AtomicU64,
}

impl CertResolver {
    /// Reads `dir/tls.crt` and `dir/tls.key`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let snap = Snapshot {
            cert: fs::read(&cert_path).map_err(io(&cert_path))?,
            key: fs::read(&key_path).map_err(io(&key_path))?,
        };
        let key = certified_key(&snap.cert, &snap.key, &cert_path, &key_path)?;
        Ok(Self {
            dir: dir.into(),
            current: RwLock::new(Arc::new(key)),
            seen: RwLock::new((snap, None)),
            reads: AtomicU64::new(0),
        })
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // Poisoning only means a writer panicked between two whole values.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times [`CertResolver::reload`] has read both files: once it
    /// moved on after a write, that write was seen.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Acquire)
    }

    /// Reads the files again and, when their bytes changed and form a valid
    /// pair, serves them from the next handshake on. `Ok(true)` when the
    /// certificate changed; an error (once per broken content) when the new
    /// files do not load, in which case the previous certificate stays.
    pub async fn reload(&self) -> Result<bool, CertError> {
        let (cert_path, key_path) = (self.dir.join(CERT_FILE), self.dir.join(KEY_FILE));
        let snap = Snapshot {
            cert: tokio::fs::read(&cert_path).await.map_err(io(&cert_path))?,
            key: tokio::fs::read(&key_path).await.map_err(io(&key_path))?,
        };
        let _counted = Counted(&self.reads);
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if seen.0 == snap || seen.1.as_ref() == Some(&snap) {
                return Ok(false);
            }
        }
        match certified_key(&snap.cert, &snap.key, &cert_path, &key_path) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                *self.seen.write().unwrap_or_else(|e| e.into_inner()) = (snap, None);
                Ok(true)
            }
            Err(e) => {
                self.seen.write().unwrap_or_else(|e| e.into_inner()).1 = Some(snap);
                Err(e)
            }
        }
    }
}

/// Counts a read of the files when the reload that made it is done.
struct Counted<'a>(&'a AtomicU64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            subject_alt_names(&["svc.ns.svc".into(), "localhost".into(), " ".into()]),
            ["svc.ns.svc", "localhost", "127.0.0.1"]
        );
    }

    #[test]
    fn ensure_generates_once_and_refuses_odd_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        assert!(ensure(&dir, &["webhook.imageauto.svc".into()]).unwrap());
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert!(dir.join(CA_FILE).exists());
        let first = fs::read(dir.join(CERT_FILE)).unwrap();
        assert!(!ensure(&dir, &[]).unwrap());
        assert_eq!(fs::read(dir.join(CERT_FILE)).unwrap(), first);
        CertResolver::load(&dir).unwrap();

        fs::remove_file(dir.join(KEY_FILE)).unwrap();
        let e = ensure(&dir, &[]).unwrap_err().to_string();
        assert!(e.contains("holds tls.crt but not tls.key"), "{e}");

        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("README"), "x").unwrap();
        let e = ensure(&other, &[]).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("README"), "{e}");
    }

    #[test]
    fn mismatched_pair_is_refused() {
        let a = generate(&[]).unwrap();
        let b = generate(&[]).unwrap();
        let e = certified_key(
            a.cert_pem.as_bytes(),
            b.key_pem.as_bytes(),
            Path::new("tls.crt"),
            Path::new("tls.key"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("do not belong together"), "{e}");
        let e = certified_key(
            b"junk",
            a.key_pem.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no certificate"), "{e}");
    }

    #[tokio::test]
    async fn reload_swaps_only_valid_new_pairs() {
        let tmp = tempfile::tempdir().unwrap();
        ensure(tmp.path(), &[]).unwrap();
        let r = CertResolver::load(tmp.path()).unwrap();
        let before = r.current().cert[0].clone();
        assert!(!r.reload().await.unwrap());
        // Half a rotation: a new certificate with the old key.
        let g = generate(&[]).unwrap();
        fs::write(tmp.path().join(CERT_FILE), &g.cert_pem).unwrap();
        assert!(r.reload().await.is_err());
        // Reported once.
        assert!(!r.reload().await.unwrap());
        assert_eq!(r.current().cert[0], before);
        fs::write(tmp.path().join(KEY_FILE), &g.key_pem).unwrap();
        assert!(r.reload().await.unwrap());
        assert_ne!(r.current().cert[0], before);
    }
}
