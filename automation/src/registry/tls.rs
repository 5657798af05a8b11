//! TLS for registry clients: the system roots plus an optional CA bundle, an
//! optional client certificate, ring as the crypto provider, and a verifier
//! that remembers the certificate it refused so that errors can name it.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("the CA bundle has no PEM certificate")]
    NoCaCertificate,
    #[error("the CA bundle does not parse: {0}")]
    BadCa(String),
    #[error("the client certificate does not parse: {0}")]
    BadClientCert(String),
    #[error("the client key does not parse (PEM PKCS#8, PKCS#1 or SEC1 expected)")]
    BadClientKey,
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// The certificates refused, by server name (a client talks to many hosts).
pub type RefusedCertificate = Arc<Mutex<std::collections::HashMap<String, Vec<u8>>>>;

/// Installs ring as the process's rustls provider (idempotent). Everything in
/// imageauto uses this one provider.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    refused: RefusedCertificate,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if r.is_err()
            && let Ok(mut slot) = self.refused.lock()
        {
            let host = match server_name {
                ServerName::DnsName(d) => d.as_ref().to_string(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                _ => String::new(),
            };
            slot.insert(host, end_entity.to_vec());
        }
        r
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The system's roots, read once per process.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    })
}

/// Builds the client configuration: system roots, plus `ca_pem`; a client
/// certificate when both `cert_pem` and `key_pem` are given.
pub fn client_config(
    ca_pem: Option<&[u8]>,
    cert_pem: Option<&[u8]>,
    key_pem: Option<&[u8]>,
) -> Result<(rustls::ClientConfig, RefusedCertificate), TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = system_roots().clone();
    if let Some(pem) = ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsConfigError::BadCa(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsConfigError::NoCaCertificate);
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| TlsConfigError::BadCa(e.to_string()))?;
        }
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let refused: RefusedCertificate = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let verifier = Arc::new(RecordingVerifier {
        inner,
        refused: refused.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (cert_pem, key_pem) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| TlsConfigError::BadClientCert(e.to_string()))?;
            if chain.is_empty() {
                return Err(TlsConfigError::BadClientCert("no PEM certificate".into()));
            }
            let key =
                PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsConfigError::BadClientKey)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsConfigError::Rustls(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, refused))
}

/// A DER element: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `CN=..., O=...` of a DER Name.
fn name(der: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut rdns = der;
    while let Some((_, set, rest)) = tlv(rdns) {
        rdns = rest;
        let mut attrs = set;
        while let Some((_, attr, rest)) = tlv(attrs) {
            attrs = rest;
            let Some((_, oid, value)) = tlv(attr) else {
                continue;
            };
            let Some((_, value, _)) = tlv(value) else {
                continue;
            };
            let label = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                [0x55, 0x04, 0x06] => "C",
                _ => continue,
            };
            parts.push(format!("{label}={}", String::from_utf8_lossy(value)));
        }
    }
    parts.join(", ")
}

/// "subject CN=..., issued by CN=..." of a DER certificate.
pub fn describe_certificate(der: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut fields = Vec::new();
    let mut rest = tbs;
    while let Some((tag, body, r)) = tlv(rest) {
        fields.push((tag, body));
        rest = r;
    }
    // Skip the optional [0] version.
    let off = usize::from(fields.first().is_some_and(|(t, _)| *t == 0xa0));
    let issuer = fields.get(off + 2)?.1;
    let subject = fields.get(off + 4)?.1;
    let subject = name(subject);
    let issuer = name(issuer);
    Some(if subject == issuer {
        format!("subject {subject} (self-signed)")
    } else {
        format!("subject {subject}, issued by {issuer}")
    })
}
