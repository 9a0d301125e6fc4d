//! Certificates for TLS tests: a CA with server and client certificates signed by it (rcgen), key
//! format conversions through the `openssl` CLI, and a temporary directory for the PEM files.
//!
//! Include it with `#[path = "support/certs.rs"] mod certs;`.
#![allow(dead_code)]

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its private key (PKCS#8 PEM unless converted).
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A self-signed CA named `name`, with a fresh ECDSA P-256 key.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca {
            cert_pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A server certificate for `sans` (DNS names, or IP addresses when they parse as one).
    pub fn server(&self, sans: &[&str]) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*s).try_into().expect("DNS name")),
            })
            .collect();
        params.distinguished_name.push(
            DnType::CommonName,
            sans.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, KeyPair::generate().expect("server key"))
    }

    /// A client certificate with common name `cn` (PostgreSQL compares it with the user name).
    pub fn client(&self, cn: &str) -> Issued {
        self.client_with_key(cn, KeyPair::generate().expect("client key"))
    }

    /// A client certificate for an existing key, e.g. an RSA key from [`rsa_key`].
    pub fn client_with_key(&self, cn: &str, key: KeyPair) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, key)
    }

    fn issue(&self, mut params: CertificateParams, key: KeyPair) -> Issued {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A 2048-bit RSA key made by `openssl genpkey` (ring cannot generate RSA keys), PKCS#8.
pub fn rsa_key() -> KeyPair {
    let pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        None,
    );
    KeyPair::from_pem(&pem).expect("load RSA key")
}

/// The key in PKCS#8 encrypted with PBES2 (PBKDF2-HMAC-SHA256 + AES-256-CBC), as
/// `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes it: `BEGIN ENCRYPTED PRIVATE KEY`.
pub fn encrypt_pkcs8(key_pem: &str, password: &str) -> String {
    let out = openssl(
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            &format!("pass:{password}"),
        ],
        Some(key_pem),
    );
    assert!(out.contains("BEGIN ENCRYPTED PRIVATE KEY"), "{out}");
    out
}

/// An EC key in SEC1 form: `BEGIN EC PRIVATE KEY`.
pub fn to_sec1(key_pem: &str) -> String {
    let out = openssl(&["ec"], Some(key_pem));
    assert!(out.contains("BEGIN EC PRIVATE KEY"), "{out}");
    out
}

/// An RSA key in PKCS#1 form: `BEGIN RSA PRIVATE KEY`.
pub fn to_pkcs1(key_pem: &str) -> String {
    let out = openssl(&["rsa", "-traditional"], Some(key_pem));
    assert!(out.contains("BEGIN RSA PRIVATE KEY"), "{out}");
    out
}

/// An EC key with OpenSSL's legacy PEM encryption (`Proc-Type: 4,ENCRYPTED`).
pub fn legacy_encrypted_sec1(key_pem: &str, password: &str) -> String {
    let out = openssl(
        &["ec", "-aes256", "-passout", &format!("pass:{password}")],
        Some(key_pem),
    );
    assert!(out.contains("Proc-Type: 4,ENCRYPTED"), "{out}");
    out
}

/// Runs the `openssl` CLI with `stdin`, returning stdout; panics with stderr on failure.
pub fn openssl(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the `openssl` CLI is needed for these tests");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write to openssl");
    drop(input);
    let out = child.wait_with_output().expect("openssl output");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("openssl output is text")
}

/// A temporary directory for PEM files, deleted on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "pgdbm-certs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create cert dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` and returns the file's path as a string, ready for the
    /// `ssl_*_file` fields.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("write cert file");
        path.to_str().expect("UTF-8 temp path").to_owned()
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
