//! TLS for driver connections: rustls with the aws-lc-rs provider (ring with the `ring` feature
//! instead), in libpq's three verifying modes
//! (`require`, `verify-ca`, `verify-full`), with optional client certificates for mutual TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseConfig, SslMode};
use crate::error::{Error, Result};

/// The connector type the pool and connections are generic over.
pub(crate) type MakeTls = MakeRustlsConnect;

/// Hint appended to key errors that a re-encryption fixes.
const REENCRYPT_HINT: &str = "convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.key -out new.key` \
     (encrypted, set ssl_key_password) or `openssl pkcs8 -topk8 -nocrypt -in old.key -out new.key` (unencrypted)";

/// The crypto provider: aws-lc-rs (the `aws-lc-rs` feature, on by default: rustls's own
/// recommendation, with post-quantum key exchange), else ring (the `ring` feature).
fn crypto_provider() -> CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    {
        rustls::crypto::aws_lc_rs::default_provider()
    }
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    {
        rustls::crypto::ring::default_provider()
    }
}

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!(
    "pgdbm needs a TLS crypto provider: enable its `aws-lc-rs` (default) or `ring` feature"
);

/// Builds the TLS connector for `mode` from the `ssl_*` fields of `config`.
///
/// - `verify-full`: the chain must lead to `ssl_ca_file` (or a system root) and the certificate
///   must name the host (DNS or IP SAN).
/// - `verify-ca`: the chain is verified, the host name is not.
/// - `require`: any certificate is accepted; the connection is encrypted but not authenticated.
///   `ssl_ca_file` is ignored here (unlike libpq, which upgrades to `verify-ca` when a root file
///   exists) so that `require` behaves the same whatever files happen to be configured.
pub(crate) fn make_tls_connector(config: &DatabaseConfig, mode: SslMode) -> Result<MakeTls> {
    // The provider is explicit so the choice never depends on which rustls features other crates
    // in the build enabled (a process-wide default would panic with two providers compiled in).
    let provider = Arc::new(crypto_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("ssl_mode", format!("cannot set up TLS: {e}")))?;

    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Require => Arc::new(AcceptAnyServerCert {
            algorithms: provider.signature_verification_algorithms,
        }),
        SslMode::VerifyCa => Arc::new(SkipHostnameVerifier {
            inner: webpki_verifier(config, &provider)?,
        }),
        SslMode::VerifyFull => webpki_verifier(config, &provider)?,
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);

    let tls = match client_identity(config)? {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
            let message = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the key in {} does not belong to the certificate in {}",
                    config.ssl_key_file.as_deref().unwrap_or_default(),
                    config.ssl_cert_file.as_deref().unwrap_or_default()
                ),
                other => format!("the key cannot be used for TLS client authentication: {other}"),
            };
            Error::config("ssl_key_file", message)
        })?,
        None => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(tls))
}

/// The standard WebPKI verifier over the configured roots.
fn webpki_verifier(
    config: &DatabaseConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    let roots = root_store(config)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| {
            Error::config(
                "ssl_ca_file",
                format!("cannot build the certificate verifier: {e}"),
            )
        })
}

/// `ssl_ca_file` when set, else the operating system's trust store.
fn root_store(config: &DatabaseConfig) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = non_empty(&config.ssl_ca_file) {
        let certs = read_certs("ssl_ca_file", path)?;
        let (_, ignored) = roots.add_parsable_certificates(certs);
        if roots.is_empty() {
            return Err(Error::config(
                "ssl_ca_file",
                format!(
                    "{path}: none of its {ignored} certificate(s) can be used as a trust anchor"
                ),
            ));
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            let why = found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(Error::config(
                "ssl_ca_file",
                format!(
                    "no system root certificates found{why}; set ssl_ca_file to the PEM file of the CA \
                     that signed the server's certificate, or use ssl_mode: \"require\""
                ),
            ));
        }
    }
    Ok(roots)
}

/// The client certificate chain and key, when mutual TLS is configured.
fn client_identity(
    config: &DatabaseConfig,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
    match (
        non_empty(&config.ssl_cert_file),
        non_empty(&config.ssl_key_file),
    ) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::config(
            "ssl_key_file",
            "ssl_cert_file is set but ssl_key_file is not: mutual TLS needs both the client \
             certificate and its private key",
        )),
        (None, Some(_)) => Err(Error::config(
            "ssl_cert_file",
            "ssl_key_file is set but ssl_cert_file is not: mutual TLS needs both the client \
             certificate and its private key",
        )),
        (Some(cert), Some(key)) => {
            let certs = read_certs("ssl_cert_file", cert)?;
            let key = read_private_key(key, config.ssl_key_password.as_deref())?;
            Ok(Some((certs, key)))
        }
    }
}

/// Treats an empty path like an unset one, as an empty environment variable usually means "unset".
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.trim().is_empty())
}

fn read_file(field: &'static str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(Path::new(path))
        .map_err(|e| Error::config(field, format!("cannot read {path}: {e}")))
}

/// All PEM certificates in a file; at least one.
fn read_certs(field: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_file(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::config(field, format!("{path} is not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(
            field,
            format!("{path} contains no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)"),
        ));
    }
    Ok(certs)
}

/// The private key from a PEM file: PKCS#8, PKCS#1 or SEC1, or PKCS#8 encrypted with `password`.
///
/// Errors never include the password.
fn read_private_key(path: &str, password: Option<&str>) -> Result<PrivateKeyDer<'static>> {
    let pem = read_file("ssl_key_file", path)?;
    let text = String::from_utf8_lossy(&pem);

    // OpenSSL's legacy encryption (`Proc-Type: 4,ENCRYPTED` + `DEK-Info`) uses an MD5-based key
    // derivation no maintained Rust crate implements; the PEM parser would otherwise report it as
    // a mere "no key found".
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::config(
            "ssl_key_file",
            format!("{path} uses legacy OpenSSL PEM encryption (Proc-Type: 4,ENCRYPTED), which is not supported; {REENCRYPT_HINT}"),
        ));
    }

    if let Some(block) = pem_block(&text, "ENCRYPTED PRIVATE KEY") {
        let Some(password) = password else {
            return Err(Error::config(
                "ssl_key_password",
                format!("{path} is an encrypted private key; set ssl_key_password to its password"),
            ));
        };
        return decrypt_pkcs8(path, block, password)
            .map(|der| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)));
    }

    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(Error::config(
            "ssl_key_file",
            format!(
                "{path} contains no private key: expected a PEM block `BEGIN PRIVATE KEY` (PKCS#8), \
                 `BEGIN RSA PRIVATE KEY` (PKCS#1), `BEGIN EC PRIVATE KEY` (SEC1) or \
                 `BEGIN ENCRYPTED PRIVATE KEY` (PKCS#8 with ssl_key_password)"
            ),
        )),
        Err(e) => Err(Error::config("ssl_key_file", format!("{path} is not a valid PEM file: {e}"))),
    }
}

/// The text of the first `-----BEGIN {label}-----` … `-----END {label}-----` block, markers
/// included; the strict PEM decoder used next rejects surrounding text such as `Bag Attributes`.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

/// Decrypts a PKCS#8 `EncryptedPrivateKeyInfo` (PBES2) into PKCS#8 DER.
fn decrypt_pkcs8(path: &str, block: &str, password: &str) -> Result<Vec<u8>> {
    use pkcs8::pkcs5;

    let bad_file = |e: &dyn std::fmt::Display| {
        Error::config(
            "ssl_key_file",
            format!("{path} is not a valid encrypted PKCS#8 key: {e}"),
        )
    };
    let (_, doc) = pkcs8::Document::from_pem(block).map_err(|e| bad_file(&e))?;
    let info =
        pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| bad_file(&e))?;
    let wrong_password = || {
        Error::config(
            "ssl_key_password",
            format!("cannot decrypt {path}: the password in ssl_key_password is wrong"),
        )
    };
    let secret = match info.decrypt(password) {
        Ok(secret) => secret,
        // Bad CBC padding, or decrypted bytes that are not DER, is what a wrong password looks
        // like. pkcs5 0.7 reports bad padding as `EncryptFailed`, hence both.
        Err(
            pkcs8::Error::EncryptedPrivateKey(
                pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed,
            )
            | pkcs8::Error::Asn1(_),
        ) => return Err(wrong_password()),
        Err(e) => {
            return Err(Error::config(
                "ssl_key_file",
                format!("{path} is encrypted with an unsupported scheme ({e}); {REENCRYPT_HINT}"),
            ))
        }
    };
    // A wrong password passes the padding check about once in 256 tries; the result is then
    // still not a PrivateKeyInfo.
    if pkcs8::PrivateKeyInfo::try_from(secret.as_bytes()).is_err() {
        return Err(wrong_password());
    }
    Ok(secret.as_bytes().to_vec())
}

/// `verify-ca`: WebPKI verification of the chain, with a name mismatch forgiven.
///
/// The wrapped verifier checks the chain before the name, so a name error means the chain
/// was already found valid; every other error still fails the handshake.
#[derive(Debug)]
struct SkipHostnameVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for SkipHostnameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require`: any certificate is accepted, as libpq does without a root file.
///
/// The handshake signatures are still checked, so the peer must hold the key of the certificate
/// it presents; that keeps the session keys honest even though the identity is not verified.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
