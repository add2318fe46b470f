//! The tower layer that verifies each request's bearer token before its handler runs.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{Authenticator, TokenError};
use crate::BoxFuture;

/// Longest `authorization` value accepted; a JWT of this mesh is a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Wraps services in [`Authenticate`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, auth: Arc::clone(&self.auth) }
    }
}

/// Verifies the bearer token of each request; see the module docs.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, ResBody> Service<http::Request<Body>> for Authenticate<S>
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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(header) = request.headers().get(http::header::AUTHORIZATION) else {
            return Box::pin(self.inner.call(request));
        };
        let token = bearer_token(header).map(str::to_owned);
        let auth = Arc::clone(&self.auth);
        // The permit poll_ready took belongs to this clone's inner service; keep it for the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let verified = match token {
                Ok(token) => auth.verify(&token).await,
                Err(error) => Err(error),
            };
            match verified {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(error) => Ok(error.status().into_http()),
            }
        })
    }
}

fn bearer_token(header: &http::HeaderValue) -> Result<&str, TokenError> {
    let value = header.to_str().map_err(|_| TokenError::Malformed)?;
    if value.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(token.trim())
}
