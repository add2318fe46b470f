//! The key set: a JWKS document, read from a file or fetched over HTTP(S), and its usable
//! Ed25519 keys.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

/// Largest JWKS document accepted, in bytes.
pub const MAX_JWKS_LEN: usize = 1024 * 1024;
/// Longest a JWKS fetch over HTTP(S) may take.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The public keys of a JWKS that this mesh can use (OKP / Ed25519), by `kid`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct KeySet {
    pub(super) keys: HashMap<String, VerifyingKey>,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<JwkDoc>,
}

#[derive(Deserialize)]
struct JwkDoc {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(rename = "use", default)]
    key_use: Option<String>,
}

impl KeySet {
    /// Parses a JWKS. Keys of other types, or not for signatures, are skipped; a set without
    /// one usable key is an error (it would refuse every token).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let doc: JwksDoc =
            serde_json::from_str(text).map_err(|error| format!("not a JWKS document: {error}"))?;
        let mut keys = HashMap::new();
        for jwk in doc.keys {
            let usable = jwk.kty == "OKP"
                && jwk.crv.as_deref() == Some("Ed25519")
                && jwk.key_use.as_deref().is_none_or(|u| u == "sig");
            if !usable {
                continue;
            }
            let kid = jwk.kid.filter(|kid| !kid.is_empty()).ok_or("an Ed25519 key has no kid")?;
            let x = jwk.x.ok_or_else(|| format!("key {kid:?} has no x"))?;
            let bytes: [u8; 32] = URL_SAFE_NO_PAD
                .decode(x)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| format!("key {kid:?}: x is not 32 base64url bytes"))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("key {kid:?} is not an Ed25519 point"))?;
            if keys.insert(kid.clone(), key).is_some() {
                return Err(format!("kid {kid:?} appears twice"));
            }
        }
        if keys.is_empty() {
            return Err("no Ed25519 signing key (kty OKP, crv Ed25519) in the set".into());
        }
        Ok(Self { keys })
    }
}

pub(super) fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

pub(super) async fn load_jwks(source: &str) -> Result<KeySet, String> {
    let text = if is_url(source) {
        tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch(source))
            .await
            .map_err(|_| format!("fetching {source} took over {JWKS_FETCH_TIMEOUT:?}"))??
    } else {
        let bytes =
            tokio::fs::read(source).await.map_err(|error| format!("cannot read {source}: {error}"))?;
        if bytes.len() > MAX_JWKS_LEN {
            return Err(format!("{source} is over {MAX_JWKS_LEN} bytes"));
        }
        String::from_utf8(bytes).map_err(|_| format!("{source} is not UTF-8"))?
    };
    KeySet::parse(&text)
}

/// GETs a JWKS over HTTP/1.1, with TLS (system roots) for `https`.
async fn fetch(url: &str) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::rt::TokioIo;

    let uri: http::Uri = url.parse().map_err(|_| format!("{url} is not a URL"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or_else(|| format!("{url} has no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, &host)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|error| error.to_string())?;

    async fn send<IO>(io: IO, request: http::Request<Empty<bytes::Bytes>>) -> Result<String, String>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|error| error.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_LEN)
            .collect()
            .await
            .map_err(|error| format!("reading the body: {error}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
    }

    if https {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|error| error.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|error| error.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|error| format!("TLS with {host}: {error}"))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
    .map_err(|error| format!("GET {url}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenIssuer;

    #[test]
    fn a_jwks_without_a_usable_key_is_refused() {
        assert!(KeySet::parse(r#"{"keys":[]}"#).is_err());
        assert!(KeySet::parse(r#"{"keys":[{"kty":"RSA","kid":"r","n":"x","e":"AQAB"}]}"#).is_err());
        assert!(KeySet::parse("nonsense").is_err());
        let issuer = TokenIssuer::generate("k");
        assert!(KeySet::parse(&TokenIssuer::jwks_json(&[&issuer, &issuer])).is_err(), "duplicate kid");
    }
}
