//! Mutual TLS between the services: the internal listener's and clients' TLS settings, and
//! the calling service's identity read from its certificate.
//!
//! How it flows:
//! 1. [`MeshArgs`] (flattened into the config of every service that serves or calls internal
//!    RPCs) names this service's certificate and key and the mesh CA (`TLS_CERT`, `TLS_KEY`,
//!    `TLS_CA`, PEM files) and the internal listener's address (`INTERNAL_GRPC_ADDR`).
//! 2. [`MeshTls::load`] reads and checks them once, at start (an unreadable or invalid file
//!    is a configuration error naming the variable, never the key's content). Rotation is a
//!    restart: cert-manager renews the Secret, the kubelet updates the mounted files, and
//!    the next start of the pod (a rollout restart, or any restart) reads them.
//! 3. [`crate::GrpcServer::serve_internal`] serves `ticketing.internal.*` on its own listener
//!    with [`MeshTls::server_tls`]: a client without a certificate issued by the mesh CA
//!    fails the handshake. [`MeshTls::channel`] dials another service's internal listener
//!    with this service's certificate.
//! 4. Each internal RPC calls [`require_peer`] with its allow-list: the peer certificate's
//!    URI SAN `spiffe://ticketing/<service>` names the caller.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use tonic::{
    Code, Request, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig},
};

use crate::status::{ErrorReason, with_reason};

/// The URI SAN prefix of a mesh service certificate; the service's name follows it.
pub const SPIFFE_PREFIX: &str = "spiffe://ticketing/";

/// Longest a TLS handshake on the internal listener may take: a client that opens a
/// connection and sends nothing must not hold it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where this service's mesh identity and the internal listener come from.
#[derive(Debug, Clone, clap::Args)]
pub struct MeshArgs {
    /// Address of the internal gRPC listener (mutual TLS, `ticketing.internal.*` and health
    /// only); port 0 picks a free port.
    #[arg(long, env = "INTERNAL_GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub internal_grpc_addr: SocketAddr,
    /// This service's certificate (PEM), issued by the mesh CA, with the URI SAN
    /// `spiffe://ticketing/<service>`.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: PathBuf,
    /// This service's private key (PEM). Never printed.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: PathBuf,
    /// The mesh CA certificate (PEM): peers must present a certificate it issued.
    #[arg(long, env = "TLS_CA")]
    pub tls_ca: PathBuf,
}

/// This service's loaded mesh identity and the CA it trusts.
#[derive(Clone)]
pub struct MeshTls {
    /// The service name of this service's own certificate.
    service: String,
    identity: Identity,
    ca: Certificate,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").field("service", &self.service).finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Reads and checks the files of `args`: the certificate names `expected_service`, the key
    /// is a PEM private key that matches it, the CA is a PEM certificate. The error names the
    /// variable and the problem, never the content of a file.
    pub fn load(args: &MeshArgs, expected_service: &str) -> Result<Self, String> {
        let cert = read("TLS_CERT", &args.tls_cert)?;
        let key = read("TLS_KEY", &args.tls_key)?;
        let ca = read("TLS_CA", &args.tls_ca)?;
        let service = match first_certificate(&cert) {
            Some(der) => service_of(&der).ok_or_else(|| {
                format!(
                    "TLS_CERT {}: the certificate has no URI SAN {SPIFFE_PREFIX}<service>",
                    args.tls_cert.display()
                )
            })?,
            None => return Err(format!("TLS_CERT {}: no PEM certificate in it", args.tls_cert.display())),
        };
        if service != expected_service {
            return Err(format!(
                "TLS_CERT {}: the certificate is {service:?}'s, this is {expected_service:?}",
                args.tls_cert.display()
            ));
        }
        if first_certificate(&ca).is_none() {
            return Err(format!("TLS_CA {}: no PEM certificate in it", args.tls_ca.display()));
        }
        if !String::from_utf8_lossy(&key).contains("PRIVATE KEY-----") {
            return Err(format!("TLS_KEY {}: no PEM private key in it", args.tls_key.display()));
        }
        let tls = Self { service, identity: Identity::from_pem(cert, key), ca: Certificate::from_pem(ca) };
        // Builds rustls' server settings once: a key that does not parse, or that is not the
        // certificate's, is refused here rather than at the first connection.
        tonic::transport::Server::builder().tls_config(tls.server_tls()).map_err(|error| {
            format!(
                "TLS_KEY {} does not fit TLS_CERT {}: {error}",
                args.tls_key.display(),
                args.tls_cert.display()
            )
        })?;
        Ok(tls)
    }

    /// The service this certificate names.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The internal listener's settings: this service's certificate, and a client
    /// certificate issued by the mesh CA required of every caller.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// A client's settings: the mesh CA to verify the server, this service's certificate to
    /// prove who calls.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone())
    }

    /// A lazily connecting, balanced channel to another service's internal listener at `url`
    /// (`https://<name>:<port>`; the server's certificate must name `<name>`), each call
    /// bounded by `timeout`.
    pub fn channel(&self, url: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
        ticketing_proto::connect_tls(url, timeout, self.client_tls())
    }
}

/// Checks that an internal URL is `https://`: internal listeners speak only TLS.
pub fn validate_internal_url(name: &str, url: &str) -> Result<(), String> {
    if url.starts_with("https://") && url.len() > "https://".len() {
        Ok(())
    } else {
        Err(format!("{name} must be an https:// URL (internal listeners require mutual TLS), got {url:?}"))
    }
}

fn read(name: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("{name} {}: cannot read it: {error}", path.display()))
}

/// The DER of the first certificate of a PEM bundle.
fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    (pem.label == "CERTIFICATE" && pem.parse_x509().is_ok()).then_some(pem.contents)
}

/// The service named by a certificate's `spiffe://ticketing/<service>` URI SAN.
fn service_of(der: &[u8]) -> Option<String> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => uri
            .strip_prefix(SPIFFE_PREFIX)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
            .map(str::to_owned),
        _ => None,
    })
}

/// The calling service, from the client certificate of the mutual-TLS connection, if it is
/// one of `allowed`.
///
/// - No client certificate (a plaintext or server-only-TLS connection, e.g. the public
///   listener): `UNAUTHENTICATED`, reason `PEER_CERT_MISSING`.
/// - A certificate without a mesh identity, or of a service not in `allowed`:
///   `PERMISSION_DENIED`, reason `SERVICE_NOT_ALLOWED`, with the caller's name.
///
/// The handshake already checked that the mesh CA issued the certificate.
pub fn require_peer<T>(request: &Request<T>, allowed: &[&str]) -> Result<String, Status> {
    let Some(der) = request.peer_certs().and_then(|chain| chain.first().map(|c| c.to_vec())) else {
        return Err(with_reason(
            Code::Unauthenticated,
            "internal RPC: the caller presented no client certificate",
            ErrorReason::PeerCertMissing,
            [],
        ));
    };
    let caller = service_of(&der);
    match caller {
        Some(service) if allowed.contains(&service.as_str()) => Ok(service),
        caller => {
            let shown = caller.as_deref().unwrap_or("<no mesh identity>").to_owned();
            Err(with_reason(
                Code::PermissionDenied,
                format!("internal RPC: service {shown:?} may not call it (allowed: {})", allowed.join(", ")),
                ErrorReason::ServiceNotAllowed,
                [("caller", shown), ("allowed", allowed.join(","))],
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    #[test]
    fn internal_urls_must_be_https() {
        assert!(validate_internal_url("X", "https://seat-lock-headless:50052").is_ok());
        let error = validate_internal_url("X", "http://seat-lock:50052").unwrap_err();
        assert!(error.starts_with("X must be an https:// URL"), "{error}");
        assert!(validate_internal_url("X", "https://").is_err());
    }

    #[test]
    fn a_request_without_peer_certificate_is_unauthenticated() {
        let status = require_peer(&Request::new(()), &["payment"]).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(crate::status::reason(&status).map(|r| r.0).as_deref(), Some("PEER_CERT_MISSING"));
    }
}
