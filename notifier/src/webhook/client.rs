//! The HTTP(S) client of webhook deliveries: hyper's HTTP/1.1 connection over a TCP stream
//! to an address [`super::address`] has checked, wrapped in rustls for https.
//!
//! The client never resolves a name: it is handed the checked socket addresses and connects
//! to one of them, while TLS verifies the certificate against the URL's host name (or IP).
//! Redirects are not followed (a 3xx is a failed delivery), so a receiver cannot bounce the
//! notifier to another address.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};

use super::target::Target;

/// Longest a TCP connect to one of the host's addresses may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One signed delivery request.
pub struct Post<'a> {
    pub timestamp: i64,
    pub signature: &'a str,
    pub body: Vec<u8>,
}

/// Sends webhook POSTs; cheap to clone.
#[derive(Clone)]
pub struct WebhookClient {
    tls: TlsConnector,
}

impl WebhookClient {
    /// A client trusting the system's roots plus those in `ca_file` (PEM), if given.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("WEBHOOK_CA_FILE {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("WEBHOOK_CA_FILE {}: no certificate in it", path.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("WEBHOOK_CA_FILE {}: {e}", path.display()))?;
            }
        } else if added == 0 {
            tracing::warn!("no system CA certificates found: https webhooks will fail verification");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls: TlsConnector::from(Arc::new(config)) })
    }

    /// POSTs `post` to `target` through the first of `addresses` that accepts a connection;
    /// returns the response's status code. The caller bounds the whole call in time.
    pub async fn post(
        &self,
        target: &Target,
        addresses: &[SocketAddr],
        post: Post<'_>,
    ) -> Result<u16, String> {
        let stream = connect(addresses).await?;
        if target.https {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|_| format!("{:?} is not a valid TLS server name", target.host))?;
            let stream = self.tls.connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), target, post).await
        } else {
            exchange(TokioIo::new(stream), target, post).await
        }
    }
}

/// Connects to the first of `addresses` that answers.
async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no address to connect to");
    for address in addresses {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = format!("connect to {address}: {e}"),
            Err(_) => last = format!("connect to {address}: no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(last)
}

/// One HTTP/1.1 request and its status on an established connection.
async fn exchange<I>(io: I, target: &Target, post: Post<'_>) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    let request = http::Request::post(target.path.as_str())
        .header(http::header::HOST, target.host_header())
        .header(http::header::USER_AGENT, "ticketing-notifier")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONNECTION, "close")
        .header("X-Ticketing-Timestamp", post.timestamp)
        .header("X-Ticketing-Signature", post.signature)
        .body(Full::new(Bytes::from(post.body)))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender.send_request(request);
    tokio::pin!(connection, response);
    // The connection future drives the exchange; the response arrives through `response`.
    let status = tokio::select! {
        biased;
        answered = &mut response => answered,
        closed = &mut connection => {
            closed.map_err(|e| format!("HTTP: {e}"))?;
            response.await
        }
    };
    status.map(|r| r.status().as_u16()).map_err(|e| format!("HTTP: {e}"))
}
