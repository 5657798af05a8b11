//! Commit signatures, as `git commit -S` makes them: a detached, armored
//! OpenPGP signature (`gpg.format=openpgp`, the default), or an armored
//! SSHSIG with namespace `git` (`gpg.format=ssh`, what `ssh-keygen -Y sign`
//! writes), over the commit object's bytes. Pure: key bytes and a
//! passphrase in, a [`Signer`]; a payload in, the signature text out. No
//! gpg, no ssh-keygen, no agent.
//!
//! Keys are checked when they are read, so that a key that can never sign
//! is refused before anything is committed: a key that does not parse, a
//! passphrase that does not unlock it, an OpenPGP key that is revoked or
//! expired, or without a (sub)key allowed to sign. Errors name what is
//! wrong and the key's fingerprint; never the passphrase, never key
//! material.

use pgp::composed::{ArmorOptions, Deserializable, DetachedSignature, SignedSecretKey};
use pgp::packet::{self, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Password, SigningKey as _, Timestamp};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The SSHSIG namespace git signs and verifies commits with.
pub const SSH_NAMESPACE: &str = "git";

/// The two kinds of key git signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// An OpenPGP secret key (`gpg --export-secret-keys --armor`).
    OpenPgp,
    /// An OpenSSH private key (`ssh-keygen`'s `-----BEGIN OPENSSH PRIVATE
    /// KEY-----`).
    Ssh,
}

impl From<crate::api::SigningKeyType> for KeyFormat {
    fn from(t: crate::api::SigningKeyType) -> Self {
        match t {
            crate::api::SigningKeyType::Gpg => KeyFormat::OpenPgp,
            crate::api::SigningKeyType::Ssh => KeyFormat::Ssh,
        }
    }
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFormat::OpenPgp => "OpenPGP",
            KeyFormat::Ssh => "SSH",
        })
    }
}

/// Why a key cannot sign. Never carries the passphrase or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Neither an OpenPGP nor an OpenSSH private key (or a public key, or
    /// another format): the message says which and what to give instead.
    #[error("{0}")]
    NotAPrivateKey(String),
    #[error("the {format} private key does not parse: {message}")]
    Parse { format: KeyFormat, message: String },
    #[error("the {format} private key is protected by a passphrase, and none was given")]
    PassphraseNeeded { format: KeyFormat },
    #[error("the passphrase does not unlock the {format} private key")]
    WrongPassphrase { format: KeyFormat },
    #[error(
        "OpenPGP key {key} expired on {at}: extend it (gpg --quick-set-expire) or use another key"
    )]
    Expired { key: String, at: String },
    #[error("OpenPGP key {key} is revoked{reason}")]
    Revoked { key: String, reason: String },
    /// No key of the file may sign (its key flags), or the only keys that
    /// may are expired or revoked.
    #[error("OpenPGP key {key} has no key that can sign: {message}")]
    CannotSign { key: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("the signature could not be made: {0}")]
    Sign(String),
    /// A Secret without a signing key under the names read.
    #[error("{secret}: {message}")]
    NoKeyInSecret { secret: String, message: String },
    /// The key of a Secret cannot sign.
    #[error("{secret}: {key}: {source}{hint}")]
    InSecret {
        secret: String,
        key: String,
        source: Box<SignError>,
        hint: &'static str,
    },
}

/// The signing key of a Secret's data, as an automation's
/// `spec.git.commit.signingKey` names it: `git.asc` (an armored OpenPGP
/// secret key, as Flux reads it), `git.ssh` (an OpenSSH private key:
/// imageauto's extension, no field added to the automation), and with
/// `type: ssh`, Flux's `identity`; the passphrase in `passphrase` (or
/// `password`, Flux's name beside `identity`). `wanted` is the `type`: `ssh`
/// reads `git.ssh`, else `identity`; `gpg` or none reads `git.asc`, else
/// `git.ssh`. The key's format is recognised from its content either way.
pub fn from_secret_data(
    data: &BTreeMap<String, Vec<u8>>,
    wanted: Option<KeyFormat>,
    secret: &str,
) -> Result<Signer, SignError> {
    let names: &[&str] = match wanted {
        Some(KeyFormat::Ssh) => &["git.ssh", "identity"],
        _ => &["git.asc", "git.ssh"],
    };
    let Some((name, key)) = names.iter().find_map(|n| data.get(*n).map(|v| (*n, v))) else {
        let message = match wanted {
            Some(KeyFormat::Ssh) => {
                "has no git.ssh (an OpenSSH private key), nor identity: signingKey.type is ssh"
            }
            _ => {
                "has no git.asc (an armored OpenPGP secret key) nor git.ssh (an OpenSSH private key) to sign with"
            }
        };
        return Err(SignError::NoKeyInSecret {
            secret: secret.to_string(),
            message: message.to_string(),
        });
    };
    let passphrase = data
        .get("passphrase")
        .or_else(|| data.get("password"))
        .map(Vec::as_slice);
    Signer::from_key(key, passphrase).map_err(|e| {
        let hint = match e {
            SignError::PassphraseNeeded { .. } => ": give it in the Secret's passphrase key",
            SignError::WrongPassphrase { .. } => ": check the Secret's passphrase key",
            _ => "",
        };
        SignError::InSecret {
            secret: secret.to_string(),
            key: name.to_string(),
            source: Box::new(e),
            hint,
        }
    })
}

/// A key ready to sign commits (unlocked once, when read).
pub struct Signer {
    key: Key,
    /// `OpenPGP key FINGERPRINT` or `SSH key SHA256:...`, for messages.
    description: String,
}

enum Key {
    OpenPgp {
        key: Box<PgpKey>,
        /// When the key (or its primary key) stops being valid.
        expires: Option<SystemTime>,
        fingerprint: String,
    },
    Ssh(Box<ssh_key::PrivateKey>),
    /// An RSA SSH key signs through the rsa crate itself (rsa-sha2-512, as
    /// ssh-keygen does): ssh-key 0.6 rebuilds RSA keys from their first
    /// prime twice, which the rsa crate rightly refuses.
    SshRsa {
        key: Box<ssh_key::PrivateKey>,
        signing: Box<rsa::pkcs1v15::SigningKey<sha2::Sha512>>,
    },
}

/// The OpenPGP key that makes the signatures: the primary key, or a
/// signing subkey (as gpg picks it: the newest valid one).
enum PgpKey {
    Primary(packet::SecretKey),
    Subkey(packet::SecretSubkey),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.description)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads a private key, recognising its format from the bytes: an
    /// armored (or binary) OpenPGP secret key, or an OpenSSH private key.
    /// `passphrase` unlocks a protected key (ignored for one that is not).
    pub fn from_key(key: &[u8], passphrase: Option<&[u8]>) -> Result<Signer, SignError> {
        match detect(key)? {
            KeyFormat::OpenPgp => Signer::openpgp(key, passphrase),
            KeyFormat::Ssh => Signer::ssh(key, passphrase),
        }
    }

    /// Reads an OpenPGP secret key (armored, as `gpg --export-secret-keys
    /// --armor` writes it, or binary); the first key when there are several.
    pub fn openpgp(key: &[u8], passphrase: Option<&[u8]>) -> Result<Signer, SignError> {
        let parse = |message: String| SignError::Parse {
            format: KeyFormat::OpenPgp,
            message,
        };
        let (secret, _) = SignedSecretKey::from_reader_single(key)
            .map_err(|e| parse(library_message(&e.to_string())))?;
        let now = SystemTime::now();
        let chosen = choose_pgp_key(&secret, now)?;
        let fingerprint = format!("{:X}", secret.primary_key.fingerprint());
        let mut key = match chosen.index {
            None => PgpKey::Primary(secret.primary_key.clone()),
            Some(i) => PgpKey::Subkey(secret.secret_subkeys[i].key.clone()),
        };
        unlock_pgp(&mut key, passphrase)?;
        let description = match &key {
            PgpKey::Primary(_) => format!("OpenPGP key {fingerprint}"),
            PgpKey::Subkey(s) => format!(
                "OpenPGP key {fingerprint} (signing subkey {:X})",
                s.fingerprint()
            ),
        };
        Ok(Signer {
            key: Key::OpenPgp {
                key: Box::new(key),
                expires: chosen.expires,
                fingerprint,
            },
            description,
        })
    }

    /// Reads an OpenSSH private key (ed25519, ecdsa P-256/384/521, rsa).
    pub fn ssh(key: &[u8], passphrase: Option<&[u8]>) -> Result<Signer, SignError> {
        let format = KeyFormat::Ssh;
        let mut private = ssh_key::PrivateKey::from_openssh(key).map_err(|e| SignError::Parse {
            format,
            message: library_message(&e.to_string()),
        })?;
        if private.is_encrypted() {
            let candidates = passphrase_candidates(passphrase);
            if candidates.is_empty() {
                return Err(SignError::PassphraseNeeded { format });
            }
            let mut unlocked = None;
            for pw in candidates {
                match private.decrypt(pw) {
                    Ok(k) => {
                        unlocked = Some(k);
                        break;
                    }
                    Err(ssh_key::Error::Crypto) => continue,
                    Err(e) => {
                        return Err(SignError::Unsupported(format!(
                            "the SSH private key cannot be unlocked: {e}"
                        )));
                    }
                }
            }
            private = unlocked.ok_or(SignError::WrongPassphrase { format })?;
        }
        match private.algorithm() {
            ssh_key::Algorithm::Ed25519
            | ssh_key::Algorithm::Ecdsa { .. }
            | ssh_key::Algorithm::Rsa { .. } => {}
            a @ (ssh_key::Algorithm::SkEd25519 | ssh_key::Algorithm::SkEcdsaSha2NistP256) => {
                return Err(SignError::Unsupported(format!(
                    "{} is a security-key SSH key: it signs only with its hardware token; use an ed25519, ecdsa or rsa key",
                    a.as_str()
                )));
            }
            a => {
                return Err(SignError::Unsupported(format!(
                    "SSH keys of type {} cannot sign commits here: use an ed25519, ecdsa or rsa key",
                    a.as_str()
                )));
            }
        }
        let description = format!("SSH key {}", private.fingerprint(ssh_key::HashAlg::Sha256));
        let key = match private.key_data() {
            ssh_key::private::KeypairData::Rsa(pair) => Key::SshRsa {
                signing: Box::new(rsa_signing_key(pair)?),
                key: Box::new(private),
            },
            _ => Key::Ssh(Box::new(private)),
        };
        Ok(Signer { key, description })
    }

    /// Which kind of key this is.
    pub fn format(&self) -> KeyFormat {
        match self.key {
            Key::OpenPgp { .. } => KeyFormat::OpenPgp,
            Key::Ssh(_) | Key::SshRsa { .. } => KeyFormat::Ssh,
        }
    }

    /// `OpenPGP key FINGERPRINT` or `SSH key SHA256:...`: safe to show.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The public half, as a verifier wants it: for SSH, an `authorized_keys`
    /// line (`ssh-ed25519 AAAA... comment`); for OpenPGP, the fingerprint.
    pub fn public(&self) -> String {
        match &self.key {
            Key::OpenPgp { fingerprint, .. } => fingerprint.clone(),
            Key::Ssh(key) | Key::SshRsa { key, .. } => {
                key.public_key().to_openssh().unwrap_or_default()
            }
        }
    }

    /// Signs `payload` (a commit object's bytes, without its signature) as
    /// git does: an armored OpenPGP detached signature, or an armored SSHSIG
    /// (namespace `git`, SHA-512). The text ends with a newline.
    pub fn sign(&self, payload: &[u8]) -> Result<String, SignError> {
        match &self.key {
            Key::OpenPgp {
                key,
                expires,
                fingerprint,
            } => {
                if let Some(at) = expires
                    && *at <= SystemTime::now()
                {
                    return Err(SignError::Expired {
                        key: fingerprint.clone(),
                        at: httpdate::fmt_http_date(*at),
                    });
                }
                let rng = rand_core::OsRng;
                let pw = Password::empty();
                let sig = match key.as_ref() {
                    PgpKey::Primary(k) => {
                        DetachedSignature::sign_binary_data(rng, k, &pw, k.hash_alg(), payload)
                    }
                    PgpKey::Subkey(k) => {
                        DetachedSignature::sign_binary_data(rng, k, &pw, k.hash_alg(), payload)
                    }
                }
                .map_err(|e| SignError::Sign(library_message(&e.to_string())))?;
                let text = sig
                    .to_armored_string(ArmorOptions::default())
                    .map_err(|e| SignError::Sign(library_message(&e.to_string())))?;
                Ok(lf_terminated(&text))
            }
            Key::Ssh(key) => {
                let sig = key
                    .sign(SSH_NAMESPACE, ssh_key::HashAlg::Sha512, payload)
                    .map_err(|e| SignError::Sign(library_message(&e.to_string())))?;
                armored_sshsig(&sig)
            }
            Key::SshRsa { key, signing } => {
                use rsa::signature::{SignatureEncoding, Signer as _};
                let hash = ssh_key::HashAlg::Sha512;
                let err = |e: ssh_key::Error| SignError::Sign(library_message(&e.to_string()));
                let data =
                    ssh_key::SshSig::signed_data(SSH_NAMESPACE, hash, payload).map_err(err)?;
                let raw = signing
                    .try_sign(&data)
                    .map_err(|e| SignError::Sign(library_message(&e.to_string())))?;
                let signature = ssh_key::Signature::new(
                    ssh_key::Algorithm::Rsa { hash: Some(hash) },
                    raw.to_vec(),
                )
                .map_err(err)?;
                let sig = ssh_key::SshSig::new(
                    key.public_key().key_data().clone(),
                    SSH_NAMESPACE,
                    hash,
                    signature,
                )
                .map_err(err)?;
                armored_sshsig(&sig)
            }
        }
    }
}

/// An SSHSIG armored as ssh-keygen writes it (70 columns, LF).
fn armored_sshsig(sig: &ssh_key::SshSig) -> Result<String, SignError> {
    sig.to_pem(ssh_key::LineEnding::LF)
        .map(|t| lf_terminated(&t))
        .map_err(|e| SignError::Sign(library_message(&e.to_string())))
}

/// The RSA private key of an OpenSSH key pair, checked (its primes match
/// its modulus), at least 2048 bits as OpenSSH wants for signatures.
fn rsa_signing_key(
    pair: &ssh_key::private::RsaKeypair,
) -> Result<rsa::pkcs1v15::SigningKey<sha2::Sha512>, SignError> {
    use rsa::traits::PublicKeyParts;
    let int = |m: &ssh_key::Mpint| rsa::BigUint::from_bytes_be(m.as_bytes());
    let private = rsa::RsaPrivateKey::from_components(
        int(&pair.public.n),
        int(&pair.public.e),
        int(&pair.private.d),
        vec![int(&pair.private.p), int(&pair.private.q)],
    )
    .map_err(|e| SignError::Parse {
        format: KeyFormat::Ssh,
        message: format!(
            "the RSA key is not consistent: {}",
            library_message(&e.to_string())
        ),
    })?;
    let bits = private.size() * 8;
    if bits < 2048 {
        return Err(SignError::Unsupported(format!(
            "the RSA key has {bits} bits: signatures need at least 2048"
        )));
    }
    Ok(rsa::pkcs1v15::SigningKey::new(private))
}

/// LF line endings, one final newline.
fn lf_terminated(text: &str) -> String {
    let mut t = text.replace("\r\n", "\n");
    while t.ends_with("\n\n") {
        t.pop();
    }
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t
}

/// A library's error message, safe to show: a parser may quote the bytes
/// it choked on (rpgp's show them as `Error { input: [84, 66, ...] }`), so
/// the text stops at the first structured dump, and any long run of
/// key-like characters (hex, base64) is cut out.
fn library_message(m: &str) -> String {
    let end = ["Error(", "Error {", "input:", "[", "{"]
        .iter()
        .filter_map(|p| m.find(p))
        .min()
        .unwrap_or(m.len());
    let m = m[..end].trim_end_matches([' ', ':', ',', '(']);
    let mut out = String::new();
    for word in m.split(' ') {
        let keyish = word.len() > 24
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | ','));
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(if keyish { "…" } else { word });
    }
    out.chars().take(300).collect()
}

/// The format of a private key file, or why it is none of the two.
pub fn detect(key: &[u8]) -> Result<KeyFormat, SignError> {
    let head = String::from_utf8_lossy(&key[..key.len().min(4096)]);
    let text = head.trim_start_matches('\u{feff}').trim_start();
    let labels = |l: &str| text.contains(&format!("-----BEGIN {l}-----"));
    if labels("PGP PRIVATE KEY BLOCK") {
        return Ok(KeyFormat::OpenPgp);
    }
    if labels("OPENSSH PRIVATE KEY") {
        return Ok(KeyFormat::Ssh);
    }
    if labels("PGP PUBLIC KEY BLOCK") {
        return Err(SignError::NotAPrivateKey(
            "this is an OpenPGP public key: signing needs the secret key (gpg --export-secret-keys --armor KEYID)".into(),
        ));
    }
    for pem in [
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "DSA PRIVATE KEY",
        "PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
    ] {
        if labels(pem) {
            return Err(SignError::NotAPrivateKey(format!(
                "this is a PEM private key ({pem}), not an OpenSSH one: convert it with `ssh-keygen -p -f FILE` (it rewrites the key in the OpenSSH format)"
            )));
        }
    }
    let first = text.split_whitespace().next().unwrap_or("");
    if first.starts_with("ssh-")
        || first.starts_with("ecdsa-sha2-")
        || first.starts_with("sk-")
        || first.contains("@openssh.com")
    {
        return Err(SignError::NotAPrivateKey(
            "this is an SSH public key: signing needs the private key (the file without .pub)"
                .into(),
        ));
    }
    // A binary OpenPGP packet: the tag byte has its top bit set, and a
    // secret key is tag 5 (old format: 0x94..0x97; new format: 0xc5).
    if let Some(&b) = key.first()
        && (b == 0xc5 || (b & 0xfc) == 0x94)
    {
        return Ok(KeyFormat::OpenPgp);
    }
    Err(SignError::NotAPrivateKey(
        "not a private key: expected an armored OpenPGP secret key (-----BEGIN PGP PRIVATE KEY BLOCK-----) or an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----)".into(),
    ))
}

/// The passphrase as given, then without a trailing newline (a Secret made
/// from a file, a variable set from `echo`), when that differs.
fn passphrase_candidates(passphrase: Option<&[u8]>) -> Vec<&[u8]> {
    let Some(p) = passphrase else {
        return Vec::new();
    };
    let mut out = vec![p];
    let mut trimmed = p;
    while let [rest @ .., b'\n' | b'\r'] = trimmed {
        trimmed = rest;
    }
    if trimmed.len() != p.len() {
        out.push(trimmed);
    }
    out
}

fn unlock_pgp(key: &mut PgpKey, passphrase: Option<&[u8]>) -> Result<(), SignError> {
    let format = KeyFormat::OpenPgp;
    let encrypted = match key {
        PgpKey::Primary(k) => k.secret_params().is_encrypted(),
        PgpKey::Subkey(k) => k.secret_params().is_encrypted(),
    };
    if !encrypted {
        return Ok(());
    }
    let candidates = passphrase_candidates(passphrase);
    if candidates.is_empty() {
        return Err(SignError::PassphraseNeeded { format });
    }
    let mut unsupported = None;
    for pw in candidates {
        let pw = Password::from(pw);
        let r = match key {
            PgpKey::Primary(k) => k.remove_password(&pw),
            PgpKey::Subkey(k) => k.remove_password(&pw),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(
                e @ (pgp::errors::Error::Unsupported { .. }
                | pgp::errors::Error::Unimplemented { .. }),
            ) => unsupported = Some(library_message(&e.to_string())),
            Err(_) => {}
        }
    }
    match unsupported {
        Some(m) => Err(SignError::Unsupported(format!(
            "the OpenPGP private key cannot be unlocked: {m}"
        ))),
        None => Err(SignError::WrongPassphrase { format }),
    }
}

/// The key gpg would sign with, and until when it is valid.
struct Chosen {
    /// `None`: the primary key; `Some(i)`: `secret_subkeys[i]`.
    index: Option<usize>,
    expires: Option<SystemTime>,
}

fn time(t: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(t.as_secs()))
}

fn created(sig: &packet::Signature) -> SystemTime {
    sig.created().map_or(UNIX_EPOCH, time)
}

/// The end of validity a self-signature gives a key created at `created`.
fn expiry(sig: &packet::Signature, created: Timestamp) -> Option<SystemTime> {
    let d = sig.key_expiration_time()?;
    let d: Duration = d.into();
    (!d.is_zero()).then(|| time(created) + d)
}

fn has_key_flags(sig: &packet::Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

fn can_sign_algorithm(alg: pgp::crypto::public_key::PublicKeyAlgorithm) -> bool {
    use pgp::crypto::public_key::PublicKeyAlgorithm as A;
    matches!(
        alg,
        A::RSA | A::RSASign | A::DSA | A::ECDSA | A::EdDSALegacy | A::Ed25519 | A::Ed448
    )
}

fn revocation_reason(sig: &packet::Signature) -> String {
    match sig.revocation_reason_string() {
        Some(r) if !r.is_empty() => format!(": {}", String::from_utf8_lossy(r)),
        _ => String::new(),
    }
}

/// Picks the signing key as gpg does: the newest valid subkey allowed to
/// sign, else the primary key if it may; checks revocations and
/// expirations on the way (self-signatures that do not verify are ignored).
fn choose_pgp_key(secret: &SignedSecretKey, now: SystemTime) -> Result<Chosen, SignError> {
    let primary = secret.primary_key.public_key();
    let fpr = format!("{:X}", primary.fingerprint());
    // The primary key: revoked?
    if let Some(r) =
        secret.details.revocation_signatures.iter().find(|s| {
            s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok()
        })
    {
        return Err(SignError::Revoked {
            key: fpr,
            reason: revocation_reason(r),
        });
    }
    // Its newest valid self-signature (direct or on a user id) says its
    // flags and its expiration.
    let mut selfsigs: Vec<&packet::Signature> = secret
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary).is_ok())
        .collect();
    for user in &secret.details.users {
        for s in &user.signatures {
            if s.is_certification()
                && s.typ() != Some(SignatureType::CertRevocation)
                && s.verify_certification(primary, pgp::types::Tag::UserId, &user.id)
                    .is_ok()
            {
                selfsigs.push(s);
            }
        }
    }
    let newest = selfsigs.iter().max_by_key(|s| created(s)).copied();
    let primary_created = primary.created_at();
    let primary_expires = newest.and_then(|s| expiry(s, primary_created));
    if let Some(at) = primary_expires
        && at <= now
    {
        return Err(SignError::Expired {
            key: fpr,
            at: httpdate::fmt_http_date(at),
        });
    }
    let mut why_not: Vec<String> = Vec::new();
    // Subkeys that may sign, newest first.
    let mut best: Option<(SystemTime, usize, Option<SystemTime>)> = None;
    for (i, sub) in secret.secret_subkeys.iter().enumerate() {
        let public = sub.key.public_key();
        let sub_fpr = format!("{:X}", public.fingerprint());
        let valid: Vec<&packet::Signature> = sub
            .signatures
            .iter()
            .filter(|s| s.verify_subkey_binding(primary, public).is_ok())
            .collect();
        if let Some(r) = valid
            .iter()
            .find(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        {
            if r.key_flags().sign() || valid.iter().any(|s| s.key_flags().sign()) {
                why_not.push(format!(
                    "signing subkey {sub_fpr} is revoked{}",
                    revocation_reason(r)
                ));
            }
            continue;
        }
        let Some(binding) = valid
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
            .max_by_key(|s| created(s))
        else {
            continue;
        };
        if !binding.key_flags().sign() {
            continue;
        }
        let expires = expiry(binding, public.created_at());
        if let Some(at) = expires
            && at <= now
        {
            why_not.push(format!(
                "signing subkey {sub_fpr} expired on {}",
                httpdate::fmt_http_date(at)
            ));
            continue;
        }
        let made = time(public.created_at());
        if best.as_ref().is_none_or(|(t, _, _)| made > *t) {
            best = Some((made, i, expires));
        }
    }
    let earliest = |a: Option<SystemTime>, b: Option<SystemTime>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some((_, i, expires)) = best {
        return Ok(Chosen {
            index: Some(i),
            expires: earliest(expires, primary_expires),
        });
    }
    let primary_may_sign = match newest {
        Some(s) if has_key_flags(s) => s.key_flags().sign(),
        _ => can_sign_algorithm(primary.algorithm()),
    };
    if primary_may_sign {
        return Ok(Chosen {
            index: None,
            expires: primary_expires,
        });
    }
    if why_not.is_empty() {
        why_not.push(
            "neither the primary key nor a subkey has the signing capability (add one: gpg --quick-add-key FINGERPRINT default sign)"
                .into(),
        );
    }
    Err(SignError::CannotSign {
        key: fpr,
        message: why_not.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_SSH: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCuFhXpc/ogVrHfYDQy9ExXo5fZbdVPp2W1d1ro5rrZ5AAAAJg+/0m1Pv9J
tQAAAAtzc2gtZWQyNTUxOQAAACCuFhXpc/ogVrHfYDQy9ExXo5fZbdVPp2W1d1ro5rrZ5A
AAAEAkkhgQb6nCDtuqL9rPM3r5pjmxSP4djvUt2/AMb+Cn6K4WFelz+iBWsd9gNDL0TFej
l9lt1U+nZbV3Wujmutnk0AAAAAAAAAAAAAAAEAAAAB...
-----END OPENSSH PRIVATE KEY-----
";

    use pgp::composed::{KeyType, SecretKeyParamsBuilder, SubkeyParamsBuilder};
    use pgp::crypto::ecc_curve::ECCCurve;
    use pgp::crypto::hash::HashAlgorithm;
    use pgp::crypto::sym::SymmetricKeyAlgorithm;
    use pgp::types::{S2kParams, StringToKey};

    /// A cheap S2K (the default one is slow on purpose).
    fn s2k() -> S2kParams {
        S2kParams::Cfb {
            sym_alg: SymmetricKeyAlgorithm::AES256,
            s2k: StringToKey::new_iterated(rand_core::OsRng, HashAlgorithm::Sha256, 1),
            iv: vec![7u8; 16].into(),
        }
    }

    /// An armored OpenPGP secret key: `primary` signs or only certifies,
    /// with an optional signing subkey, protected by `passphrase`.
    fn pgp_key(
        key_type: KeyType,
        primary_signs: bool,
        subkey: bool,
        passphrase: Option<&str>,
    ) -> String {
        let mut b = SecretKeyParamsBuilder::default();
        b.key_type(key_type)
            .can_certify(true)
            .can_sign(primary_signs)
            .primary_user_id("Bot <bot@example.com>".into())
            .passphrase(passphrase.map(str::to_string))
            .s2k(Some(s2k()));
        if subkey {
            b.subkey(
                SubkeyParamsBuilder::default()
                    .key_type(KeyType::Ed25519Legacy)
                    .can_sign(true)
                    .passphrase(passphrase.map(str::to_string))
                    .s2k(Some(s2k()))
                    .build()
                    .unwrap(),
            );
        }
        let key = b.build().unwrap().generate(rand_core::OsRng).unwrap();
        key.to_armored_string(ArmorOptions::default()).unwrap()
    }

    fn verify_pgp(armored_key: &str, payload: &[u8], signature: &str) -> pgp::types::Fingerprint {
        let (key, _) = SignedSecretKey::from_reader_single(armored_key.as_bytes()).unwrap();
        let public = key.to_public_key();
        let (sig, _) = DetachedSignature::from_reader_single(signature.as_bytes()).unwrap();
        let issuer = sig.signature.issuer_fingerprint()[0].clone();
        let ok = sig.verify(&public.primary_key, payload).is_ok()
            || public
                .public_subkeys
                .iter()
                .any(|s| sig.verify(&s.key, payload).is_ok());
        assert!(ok, "the signature does not verify");
        assert!(sig.verify(&public.primary_key, b"other").is_err());
        issuer
    }

    #[test]
    fn openpgp_keys_sign_detached_armored_signatures_with_their_fingerprint() {
        for (what, key_type) in [
            ("ed25519", KeyType::Ed25519Legacy),
            ("p256", KeyType::ECDSA(ECCCurve::P256)),
        ] {
            let armored = pgp_key(key_type, true, false, None);
            let signer = Signer::from_key(armored.as_bytes(), None).unwrap();
            assert_eq!(signer.format(), KeyFormat::OpenPgp);
            let payload =
                b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@b> 1 +0000\n\nmsg\n";
            let sig = signer.sign(payload).unwrap();
            assert!(
                sig.starts_with("-----BEGIN PGP SIGNATURE-----\n"),
                "{what}: {sig}"
            );
            assert!(
                sig.ends_with("-----END PGP SIGNATURE-----\n"),
                "{what}: {sig}"
            );
            assert!(!sig.contains('\r'));
            let issuer = verify_pgp(&armored, payload, &sig);
            assert_eq!(format!("{issuer:X}"), signer.public(), "{what}");
            assert!(signer.description().contains(&signer.public()));
            assert!(!format!("{signer:?}").contains("BEGIN"));
        }
    }

    #[test]
    fn a_damaged_key_is_refused_without_quoting_it() {
        let armored = pgp_key(KeyType::Ed25519Legacy, true, false, None);
        // One base64 character changed in the middle, and the file cut.
        let mut lines: Vec<String> = armored.lines().map(str::to_string).collect();
        let mid = lines.len() / 2;
        lines[mid].replace_range(5..6, "#");
        let damaged = lines.join("\n");
        let cut = &armored[..armored.len() / 2];
        for key in [damaged.as_str(), cut] {
            let e = Signer::from_key(key.as_bytes(), None).unwrap_err();
            let text = e.to_string();
            assert!(
                text.starts_with("the OpenPGP private key does not parse"),
                "{text}"
            );
            assert!(!text.contains('[') && !text.contains("input"), "{text}");
        }
    }

    #[test]
    fn openpgp_passphrases_unlock_or_are_refused() {
        let armored = pgp_key(KeyType::Ed25519Legacy, true, false, Some("correct horse"));
        let e = Signer::from_key(armored.as_bytes(), None).unwrap_err();
        assert_eq!(
            e,
            SignError::PassphraseNeeded {
                format: KeyFormat::OpenPgp
            }
        );
        let e = Signer::from_key(armored.as_bytes(), Some(b"wrong battery")).unwrap_err();
        assert_eq!(
            e,
            SignError::WrongPassphrase {
                format: KeyFormat::OpenPgp
            }
        );
        assert!(!e.to_string().contains("battery"));
        for pw in [&b"correct horse"[..], b"correct horse\n"] {
            let signer = Signer::from_key(armored.as_bytes(), Some(pw)).unwrap();
            let sig = signer.sign(b"data").unwrap();
            verify_pgp(&armored, b"data", &sig);
        }
    }

    #[test]
    fn a_signing_subkey_signs_when_the_primary_key_only_certifies() {
        let armored = pgp_key(KeyType::Ed25519Legacy, false, true, Some("pw"));
        let signer = Signer::from_key(armored.as_bytes(), Some(b"pw")).unwrap();
        assert!(
            signer.description().contains("signing subkey"),
            "{}",
            signer.description()
        );
        let sig = signer.sign(b"data").unwrap();
        let (key, _) = SignedSecretKey::from_reader_single(armored.as_bytes()).unwrap();
        let public = key.to_public_key();
        let (parsed, _) = DetachedSignature::from_reader_single(sig.as_bytes()).unwrap();
        parsed
            .verify(&public.public_subkeys[0].key, b"data")
            .unwrap();
        assert_eq!(
            parsed.signature.issuer_fingerprint()[0],
            &public.public_subkeys[0].key.fingerprint()
        );
    }

    #[test]
    fn an_openpgp_key_that_may_not_sign_is_refused() {
        let armored = pgp_key(KeyType::Ed25519Legacy, false, false, None);
        let e = Signer::from_key(armored.as_bytes(), None).unwrap_err();
        assert!(matches!(e, SignError::CannotSign { .. }), "{e}");
        assert!(e.to_string().contains("signing capability"), "{e}");
    }

    fn ssh_key(alg: ssh_key::Algorithm, passphrase: Option<&str>) -> ssh_key::PrivateKey {
        let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, alg).unwrap();
        match passphrase {
            None => key,
            Some(pw) => key
                .encrypt_with(
                    ssh_key::Cipher::Aes256Ctr,
                    ssh_key::Kdf::Bcrypt {
                        salt: vec![1; 16],
                        rounds: 1,
                    },
                    42,
                    pw,
                )
                .unwrap(),
        }
    }

    #[test]
    fn ssh_keys_sign_sshsig_for_git() {
        for alg in [
            ssh_key::Algorithm::Ed25519,
            ssh_key::Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP256,
            },
        ] {
            let key = ssh_key(alg.clone(), None);
            let text = key.to_openssh(ssh_key::LineEnding::LF).unwrap();
            let signer = Signer::from_key(text.as_bytes(), None).unwrap();
            assert_eq!(signer.format(), KeyFormat::Ssh);
            let sig = signer.sign(b"commit").unwrap();
            assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----\n"), "{sig}");
            assert!(sig.ends_with("-----END SSH SIGNATURE-----\n"), "{sig}");
            // ssh-keygen wraps the base64 at 70 columns.
            assert!(sig.lines().all(|l| l.len() <= 70), "{sig}");
            let parsed = ssh_key::SshSig::from_pem(&sig).unwrap();
            assert_eq!(parsed.namespace(), "git");
            assert_eq!(parsed.hash_alg(), ssh_key::HashAlg::Sha512);
            assert_eq!(parsed.version(), 1);
            key.public_key().verify("git", b"commit", &parsed).unwrap();
            assert!(key.public_key().verify("git", b"other", &parsed).is_err());
            assert!(
                signer.public().starts_with(alg.as_str()),
                "{}",
                signer.public()
            );
            assert!(signer.description().starts_with("SSH key SHA256:"));
        }
    }

    #[test]
    fn ssh_passphrases_unlock_or_are_refused() {
        let key = ssh_key(ssh_key::Algorithm::Ed25519, Some("s3cret"));
        let text = key.to_openssh(ssh_key::LineEnding::LF).unwrap();
        let e = Signer::from_key(text.as_bytes(), None).unwrap_err();
        assert_eq!(
            e,
            SignError::PassphraseNeeded {
                format: KeyFormat::Ssh
            }
        );
        let e = Signer::from_key(text.as_bytes(), Some(b"n0t-it")).unwrap_err();
        assert_eq!(
            e,
            SignError::WrongPassphrase {
                format: KeyFormat::Ssh
            }
        );
        assert!(!e.to_string().contains("n0t-it"));
        let signer = Signer::from_key(text.as_bytes(), Some(b"s3cret")).unwrap();
        let parsed = ssh_key::SshSig::from_pem(signer.sign(b"x").unwrap()).unwrap();
        key.public_key().verify("git", b"x", &parsed).unwrap();
    }

    #[test]
    fn secrets_hold_the_key_and_its_passphrase() {
        let key = ssh_key(ssh_key::Algorithm::Ed25519, Some("pw"));
        let text = key.to_openssh(ssh_key::LineEnding::LF).unwrap();
        let armored = pgp_key(KeyType::Ed25519Legacy, true, false, None);
        let data = |pairs: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect()
        };
        // git.ssh, with or without type: ssh; git.asc first for gpg.
        let d = data(&[("git.ssh", text.as_bytes()), ("passphrase", b"pw\n")]);
        for wanted in [None, Some(KeyFormat::OpenPgp), Some(KeyFormat::Ssh)] {
            let s = from_secret_data(&d, wanted, "Secret ns/s").unwrap();
            assert_eq!(s.format(), KeyFormat::Ssh);
        }
        let both = data(&[
            ("git.ssh", text.as_bytes()),
            ("git.asc", armored.as_bytes()),
            ("passphrase", b"pw"),
        ]);
        assert_eq!(
            from_secret_data(&both, None, "s").unwrap().format(),
            KeyFormat::OpenPgp
        );
        assert_eq!(
            from_secret_data(&both, Some(KeyFormat::Ssh), "s")
                .unwrap()
                .format(),
            KeyFormat::Ssh
        );
        // Flux's SSH names, with type: ssh.
        let flux = data(&[("identity", text.as_bytes()), ("password", b"pw")]);
        assert_eq!(
            from_secret_data(&flux, Some(KeyFormat::Ssh), "s")
                .unwrap()
                .format(),
            KeyFormat::Ssh
        );
        let e = from_secret_data(&flux, None, "Secret ns/s").unwrap_err();
        assert!(
            e.to_string().starts_with("Secret ns/s: has no git.asc"),
            "{e}"
        );
        let e = from_secret_data(&data(&[("git.ssh", text.as_bytes())]), None, "Secret ns/s")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Secret ns/s: git.ssh: the SSH private key is protected by a passphrase, and none was given: give it in the Secret's passphrase key"
        );
        let e = from_secret_data(
            &data(&[("git.ssh", text.as_bytes()), ("passphrase", b"hunter2")]),
            None,
            "Secret ns/s",
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not unlock"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn formats_are_recognised_or_named() {
        assert_eq!(
            detect(b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx").unwrap(),
            KeyFormat::OpenPgp
        );
        assert_eq!(
            detect(b"\n-----BEGIN OPENSSH PRIVATE KEY-----\nxx").unwrap(),
            KeyFormat::Ssh
        );
        let e = detect(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n").unwrap_err();
        assert!(e.to_string().contains("public key"), "{e}");
        let e = detect(b"ssh-ed25519 AAAAC3Nza me@host\n").unwrap_err();
        assert!(e.to_string().contains("SSH public key"), "{e}");
        let e = detect(b"-----BEGIN RSA PRIVATE KEY-----\n").unwrap_err();
        assert!(e.to_string().contains("ssh-keygen -p"), "{e}");
        let e = detect(b"hello").unwrap_err();
        assert!(e.to_string().contains("not a private key"), "{e}");
    }

    #[test]
    fn keys_that_do_not_parse_say_so() {
        let e = Signer::from_key(ED25519_SSH.as_bytes(), None).unwrap_err();
        assert!(
            matches!(
                e,
                SignError::Parse {
                    format: KeyFormat::Ssh,
                    ..
                }
            ),
            "{e}"
        );
        let e = Signer::from_key(
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PRIVATE KEY BLOCK-----\n",
            None,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                SignError::Parse {
                    format: KeyFormat::OpenPgp,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("the OpenPGP private key does not parse")
        );
    }

    #[test]
    fn library_messages_lose_key_material() {
        let m = library_message("bad bytes AAAAC3NzaC1lZDI1NTE5AAAAIK4WFelz+iBWsd9g here");
        assert_eq!(m, "bad bytes … here");
        let m = library_message(
            "IO error: failed reading: armor footer Error(Error { input: [84, 66, 35, 74], code: Tag })",
        );
        assert_eq!(m, "IO error: failed reading: armor footer");
    }

    #[test]
    fn passphrases_are_tried_without_a_trailing_newline() {
        assert!(passphrase_candidates(None).is_empty());
        assert_eq!(passphrase_candidates(Some(b"pw")), vec![b"pw".as_slice()]);
        assert_eq!(
            passphrase_candidates(Some(b"pw\r\n")),
            vec![b"pw\r\n".as_slice(), b"pw".as_slice()]
        );
    }

    #[test]
    fn signatures_end_with_one_newline() {
        assert_eq!(lf_terminated("a\r\nb\r\n\r\n"), "a\nb\n");
        assert_eq!(lf_terminated("a"), "a\n");
    }
}
