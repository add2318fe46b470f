//! Accepting connections: which accept errors are one connection's, which are a shortage
//! worth a pause, and which mean the listener is broken and the server must stop.

use std::{net::SocketAddr, sync::Arc};

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::RetryPause;

/// The first fatal accept error of a server's listeners.
#[derive(Default)]
pub(super) struct AcceptFailure {
    reason: std::sync::OnceLock<String>,
    /// Cancelled once `reason` is set.
    pub(super) failed: CancellationToken,
}

impl AcceptFailure {
    pub(super) fn record(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.failed.cancel();
    }

    pub(super) fn reason(&self) -> &str {
        self.reason.get().map_or("a listener failed", String::as_str)
    }
}

/// Pauses after running out of descriptors or memory: 10 ms doubling to 1 s.
const ACCEPT_PAUSE: RetryPause =
    RetryPause::new(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));

/// The connections `listener` accepts. Per-connection errors are skipped, a shortage of
/// descriptors or memory pauses ([`ACCEPT_PAUSE`]), and any other error ends the stream
/// after recording it in `failure`: the listener is broken, and retrying would spin (tonic
/// itself skips every accept error and polls again).
pub(super) fn accepted(
    listener: TcpListener,
    addr: SocketAddr,
    failure: Arc<AcceptFailure>,
) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    futures::stream::unfold((listener, ACCEPT_PAUSE), move |(listener, mut pause)| {
        let failure = Arc::clone(&failure);
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        pause.reset();
                        // Small replies go out at once rather than waiting for Nagle.
                        let _ = stream.set_nodelay(true);
                        return Some((Ok(stream), (listener, pause)));
                    }
                    Err(error) => match AcceptError::classify(&error) {
                        AcceptError::Connection => continue,
                        AcceptError::Shortage => {
                            let pause = pause.next_pause();
                            tracing::warn!(%addr, %error, pause_ms = pause.as_millis() as u64, "cannot accept connections; pausing");
                            tokio::time::sleep(pause).await;
                        }
                        AcceptError::Fatal => {
                            tracing::error!(%addr, %error, "the listener failed; the server stops");
                            failure.record(format!("accepting connections on {addr} failed: {error}"));
                            return None;
                        }
                    },
                }
            }
        }
    })
}

/// What an accept error means for the listener.
enum AcceptError {
    /// One connection failed before it was accepted; the listener is fine.
    Connection,
    /// The process or system is short of descriptors or memory; it may pass.
    Shortage,
    /// The listener itself is broken.
    Fatal,
}

impl AcceptError {
    fn classify(error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        /// Linux errno values of the shortages: ENOMEM, ENFILE, EMFILE, ENOBUFS.
        const SHORTAGES: [i32; 4] = [12, 23, 24, 105];
        match error.kind() {
            ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::BrokenPipe
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut => Self::Connection,
            ErrorKind::OutOfMemory => Self::Shortage,
            _ if error.raw_os_error().is_some_and(|code| SHORTAGES.contains(&code)) => Self::Shortage,
            _ => Self::Fatal,
        }
    }
}
