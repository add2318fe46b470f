//! The mesh's development certificates: a CA and one certificate per service, made with rcgen
//! in a directory on first use and reused afterwards (the local stack's `<state>/certs`, or a
//! test's own directory).
//!
//! Each certificate carries the URI SAN `spiffe://ticketing/<service>` (the identity the
//! internal RPCs' allow-lists check), DNS SANs for the names clients dial (`<service>`,
//! `<service>-headless`, `localhost`) and the IP SAN `127.0.0.1`, and is valid both as a
//! server and as a client certificate. `tools` is the identity of tests and tools that call an
//! internal listener directly; no internal RPC allows it.
//!
//! [`ensure`] regenerates the whole set (a new CA and every certificate) when a file is
//! missing or a certificate expires within [`RENEW_BEFORE_DAYS`], so the set always matches
//! one CA; a running stack keeps the files it started with until it restarts.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Every identity the local stack issues: the five services and `tools`.
pub const IDENTITIES: [&str; 6] = ["admission", "seat-lock", "inventory", "payment", "notifier", "tools"];

/// How long the local certificates are valid.
const VALID_DAYS: i64 = 365;
/// Certificates closer than this to their end are renewed at the next start.
pub const RENEW_BEFORE_DAYS: i64 = 7;
/// The URI SAN prefix of a mesh identity (as `service_runtime::mtls::SPIFFE_PREFIX`).
const SPIFFE_PREFIX: &str = "spiffe://ticketing/";
/// Longest a test's call to an internal listener may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A directory holding the mesh CA and every identity's certificate and key (PEM).
#[derive(Debug, Clone)]
pub struct MeshCerts {
    dir: PathBuf,
}

/// The certificates in `dir`, made (or remade) when missing or about to expire.
pub fn ensure(dir: &Path) -> anyhow::Result<MeshCerts> {
    let certs = MeshCerts { dir: dir.to_path_buf() };
    if !certs.all_current() {
        certs.generate().with_context(|| format!("cannot write certificates to {}", dir.display()))?;
    }
    Ok(certs)
}

impl MeshCerts {
    /// The certificates in `dir`, as they are (see [`ensure`] to make them).
    pub fn at(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// The mesh CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `identity`'s certificate.
    pub fn cert(&self, identity: &str) -> PathBuf {
        self.dir.join(format!("{identity}.pem"))
    }

    /// `identity`'s private key.
    pub fn key(&self, identity: &str) -> PathBuf {
        self.dir.join(format!("{identity}-key.pem"))
    }

    /// `TLS_CERT`, `TLS_KEY` and `TLS_CA` for `identity`.
    pub fn env(&self, identity: &str) -> Vec<(String, String)> {
        [("TLS_CERT", self.cert(identity)), ("TLS_KEY", self.key(identity)), ("TLS_CA", self.ca())]
            .into_iter()
            .map(|(name, path)| (name.to_owned(), path.display().to_string()))
            .collect()
    }

    /// Client settings that trust the mesh CA and present `identity`'s certificate; `None`
    /// presents no certificate (a caller from outside the mesh).
    pub fn client_tls(&self, identity: Option<&str>) -> anyhow::Result<ClientTlsConfig> {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(fs::read(self.ca())?));
        Ok(match identity {
            Some(identity) => tls
                .identity(Identity::from_pem(fs::read(self.cert(identity))?, fs::read(self.key(identity))?)),
            None => tls,
        })
    }

    /// A lazily connecting channel to the internal listener on `127.0.0.1:port`, as
    /// `identity` (or with no client certificate).
    pub fn channel(&self, port: u16, identity: Option<&str>) -> anyhow::Result<Channel> {
        Ok(ticketing_proto::connect_tls(
            &format!("https://127.0.0.1:{port}"),
            CALL_TIMEOUT,
            self.client_tls(identity)?,
        )?)
    }

    /// Every file is there and no certificate ends within [`RENEW_BEFORE_DAYS`].
    fn all_current(&self) -> bool {
        let renew_at = Utc::now().timestamp() + RENEW_BEFORE_DAYS * 86_400;
        let current = |path: PathBuf| not_after(&path).is_some_and(|end| end > renew_at);
        current(self.ca())
            && IDENTITIES.iter().all(|identity| current(self.cert(identity)) && self.key(identity).exists())
    }

    /// A new CA and a certificate for every identity. Keys are written owner-only.
    fn generate(&self) -> anyhow::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = name("ticketing local mesh CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut ca);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        for identity in IDENTITIES {
            let mut params = CertificateParams::new(vec![
                identity.to_owned(),
                format!("{identity}-headless"),
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
            ])?;
            params.subject_alt_names.push(SanType::URI(format!("{SPIFFE_PREFIX}{identity}").try_into()?));
            params.distinguished_name = name(identity);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages =
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            params.use_authority_key_identifier_extension = true;
            validity(&mut params);
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&self.key(identity), &key.serialize_pem())?;
            fs::write(self.cert(identity), cert.pem())?;
        }
        // The CA last: until it is written, the set counts as missing and is made again.
        fs::write(self.ca(), ca_cert.pem())?;
        Ok(())
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// From yesterday (clock skew between processes is harmless) for [`VALID_DAYS`].
fn validity(params: &mut CertificateParams) {
    let day = |offset: i64| {
        let date = (Utc::now() + chrono::Duration::days(offset)).date_naive();
        rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8)
    };
    params.not_before = day(-1);
    params.not_after = day(VALID_DAYS);
}

/// The end of validity of the PEM certificate at `path`, in Unix seconds.
fn not_after(path: &Path) -> Option<i64> {
    let pem = fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    Some(pem.parse_x509().ok()?.validity().not_after.timestamp())
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    #[test]
    fn certificates_are_made_once_and_remade_when_missing() {
        let dir = std::env::temp_dir().join(format!("certs-{}", uuid::Uuid::new_v4().simple()));
        let certs = ensure(&dir).unwrap();
        let ca = fs::read(certs.ca()).unwrap();
        assert!(not_after(&certs.cert("payment")).unwrap() > Utc::now().timestamp() + 300 * 86_400);
        ensure(&dir).unwrap();
        assert_eq!(fs::read(certs.ca()).unwrap(), ca, "a current set is reused");
        fs::remove_file(certs.key("seat-lock")).unwrap();
        ensure(&dir).unwrap();
        assert_ne!(fs::read(certs.ca()).unwrap(), ca, "a missing file remakes the set");
        assert!(certs.key("seat-lock").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
