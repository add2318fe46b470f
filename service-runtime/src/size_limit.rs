//! The request size limit: a request message over [`MAX_REQUEST_MESSAGE_BYTES`] is refused
//! with `RESOURCE_EXHAUSTED` (reason `REQUEST_TOO_LARGE`) before any of it is decoded.
//!
//! tonic's own limit answers `OUT_OF_RANGE` ("decoded message length too large"), which says
//! nothing a caller can act on; this layer reads the 5-byte gRPC prefix of the request's first
//! message, which declares its length, and answers before tonic sees the request (after
//! reading the rest of an oversized body, up to a bound, so the answer is not cut off by a
//! reset of a stream the caller is still sending on). Every RPC of
//! the mesh takes one request message (unary or server streaming), so the first message is the
//! request. The limit is the same as tonic's default, so the services' decoders never reach
//! theirs.

use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use crate::status::{ErrorReason, with_reason};

/// The largest request message a service decodes: tonic's default receive limit, far above
/// the largest real request (a 50,000-seat venue's `CreateVenue` is well under 1 MiB). The
/// load balancer streams request bodies without a size limit of its own, so this is where a
/// request is refused, the same through the load balancer as directly.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The most bytes of an oversized request read and dropped before it is refused: past it the
/// refusal goes out while the caller still sends (and the stream is reset). Reading costs
/// nothing but bandwidth the caller spends anyway; the request timeout bounds it in time.
const MAX_DRAINED_BYTES: usize = 64 * 1024 * 1024;

/// The machine-readable reason of a refused oversized request.
pub const REASON_REQUEST_TOO_LARGE: ErrorReason = ErrorReason::RequestTooLarge;

/// Bytes of the gRPC length-prefixed message header: a compression flag and a big-endian u32.
const GRPC_PREFIX_BYTES: usize = 5;

/// Wraps services in [`RequestSizeLimit`].
#[derive(Clone, Copy, Default)]
pub struct RequestSizeLimitLayer;

impl<S> Layer<S> for RequestSizeLimitLayer {
    type Service = RequestSizeLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestSizeLimit { inner }
    }
}

/// Refuses a request whose first message declares more than [`MAX_REQUEST_MESSAGE_BYTES`].
#[derive(Clone)]
pub struct RequestSizeLimit<S> {
    inner: S,
}

use crate::BoxFuture;

impl<S, ResBody> Service<http::Request<Body>> for RequestSizeLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The permit poll_ready took belongs to this clone's inner service; keep it for the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, mut body) = request.into_parts();
            // The frames read to see the prefix, handed on intact before the rest.
            let mut read_ahead: Vec<Frame<Bytes>> = Vec::new();
            let mut head = BytesMut::new();
            while head.len() < GRPC_PREFIX_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            head.extend_from_slice(data);
                        }
                        let trailers = frame.is_trailers();
                        read_ahead.push(frame);
                        if trailers {
                            break;
                        }
                    }
                    // An empty or broken body: tonic gives it the answer it deserves.
                    Some(Err(_)) | None => break,
                }
            }
            if head.len() >= GRPC_PREFIX_BYTES {
                let declared = (&head[1..GRPC_PREFIX_BYTES]).get_u32() as usize;
                if declared > MAX_REQUEST_MESSAGE_BYTES {
                    // Read (and drop) the rest first: an answer while the caller is still
                    // sending ends with a reset of the stream, which a client or the load
                    // balancer between may report as CANCELLED instead of this status.
                    let mut drained = head.len();
                    while drained <= MAX_DRAINED_BYTES {
                        match body.frame().await {
                            Some(Ok(frame)) => drained += frame.data_ref().map_or(0, Bytes::len),
                            Some(Err(_)) | None => break,
                        }
                    }
                    return Ok(too_large(declared));
                }
            }
            let body = if read_ahead.is_empty() {
                body
            } else {
                let read_ahead = futures::stream::iter(read_ahead.into_iter().map(Ok::<_, Status>));
                Body::new(StreamBody::new(read_ahead.chain(BodyStream::new(body))))
            };
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// The refusal of a request whose message declares `declared` bytes.
fn too_large<B: Default>(declared: usize) -> http::Response<B> {
    with_reason(
        Code::ResourceExhausted,
        format!("the request message has {declared} bytes; the limit is {MAX_REQUEST_MESSAGE_BYTES} bytes"),
        REASON_REQUEST_TOO_LARGE,
        [("limit_bytes", MAX_REQUEST_MESSAGE_BYTES.to_string())],
    )
    .into_http()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use http_body_util::Full;

    use super::*;

    /// The inner service: answers OK with the request body it received, whole.
    fn echo() -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|request: http::Request<Body>| async move {
            let bytes = request.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            Ok(http::Response::new(Body::new(Full::new(bytes))))
        })
    }

    fn grpc_request(declared: u32, payload: &[u8]) -> http::Request<Body> {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&declared.to_be_bytes());
        bytes.extend_from_slice(payload);
        http::Request::new(Body::new(Full::new(Bytes::from(bytes))))
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_and_a_small_one_passes_intact() {
        let mut service = RequestSizeLimitLayer.layer(echo());
        let limit = MAX_REQUEST_MESSAGE_BYTES as u32;

        let refused = service.call(grpc_request(limit + 1, b"only the prefix came")).await.unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains(&format!("{}", limit + 1)), "{}", status.message());

        let payload = b"a small request";
        let passed = service.call(grpc_request(payload.len() as u32, payload)).await.unwrap();
        let body = passed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[GRPC_PREFIX_BYTES..], payload);
        assert_eq!((&body[1..GRPC_PREFIX_BYTES]).get_u32() as usize, payload.len());

        // A prefix split over two frames is read whole.
        let declared = (limit + 1).to_be_bytes();
        let frames = [Bytes::from(vec![0, declared[0]]), Bytes::from(declared[1..].to_vec())];
        let split = futures::stream::iter(frames.map(|b| Ok::<_, Status>(Frame::data(b))));
        let refused = service.call(http::Request::new(Body::new(StreamBody::new(split)))).await.unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), Code::ResourceExhausted);

        // At the limit exactly: passed on.
        let at_limit = service.call(grpc_request(limit, b"")).await.unwrap();
        assert!(tonic::Status::from_header_map(at_limit.headers()).is_none());
    }
}
