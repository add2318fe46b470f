//! End-user and operator identity: bearer JWTs verified against a JWKS.
//!
//! Every public RPC may carry `authorization: Bearer <JWT>`. The server's tower stack
//! ([`AuthLayer`], installed by [`crate::GrpcServer`]) verifies it before the handler runs:
//! - the header is `Bearer <compact JWT>`, at most [`MAX_TOKEN_LEN`] bytes;
//! - the algorithm is `EdDSA` (Ed25519); the key is the JWKS key named by the header's `kid`
//!   (an unknown `kid` reloads the JWKS once, rate-limited, so a new key works without a
//!   restart; the JWKS is also reloaded every [`JWKS_REFRESH`], so a removed key stops working);
//! - `exp` and `nbf` hold (with [`CLOCK_LEEWAY`]), `iss` is `AUTH_ISSUER`, `aud` (a string or a
//!   list) contains `AUTH_AUDIENCE`, and `sub` is a valid user id.
//!
//! A bad token is answered `UNAUTHENTICATED` with a `google.rpc.ErrorInfo` reason
//! ([`TokenError::reason`]) and the handler never runs. A good one puts a [`Caller`] into the
//! request's extensions. No token at all is not an error here: public catalogue reads need
//! none; a handler that needs a caller asks [`caller`], [`acting_user`] or [`require_admin`].
//!
//! Verified tokens are cached (bounded, [`CACHE_CAPACITY`], until their `exp`), so a client
//! that sends the same token on every call pays one signature check, not one per call. The
//! cache is emptied whenever the key set changes.
//!
//! [`TokenIssuer`] mints tokens: the local stack's `stack token`, the load tools and tests.
//! Production tokens come from the organisation's identity provider, whose JWKS
//! `AUTH_JWKS` points at.
//!
//! Its parts: `args` (the flags), [`caller`](fn@caller) and friends here (what a handler
//! asks), `layer` (the tower layer), `verify` (the [`Authenticator`]: signature and
//! claims), `cache` (verified tokens), `jwks` (the key set, from a file or over HTTP(S)),
//! `error` (why a token is refused) and `issuer` (minting tokens).

mod args;
mod cache;
mod error;
mod issuer;
mod jwks;
mod layer;
mod verify;

use std::sync::Arc;

use tonic::{Code, Status, metadata::MetadataValue};

pub use self::{
    args::{AuthArgs, DEFAULT_AUDIENCE, DEFAULT_ISSUER},
    cache::CACHE_CAPACITY,
    error::TokenError,
    issuer::TokenIssuer,
    jwks::{JWKS_FETCH_TIMEOUT, MAX_JWKS_LEN},
    layer::{AuthLayer, Authenticate, MAX_TOKEN_LEN},
    verify::{Authenticator, CLOCK_LEEWAY, JWKS_REFRESH, UNKNOWN_KID_RELOAD_INTERVAL},
};
use crate::status::{ErrorReason, with_reason};

/// The scope (in the space-separated `scope` claim) that makes a caller an operator.
pub const ADMIN_SCOPE: &str = "ticketing:admin";

/// Who is calling: the verified token's subject, and whether it carries [`ADMIN_SCOPE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub admin: bool,
}

/// The verified caller, or `UNAUTHENTICATED` (reason `TOKEN_MISSING`) when no token came.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Arc<Caller>>().map(|caller| &**caller).ok_or_else(|| {
        with_reason(
            Code::Unauthenticated,
            "this call needs `authorization: Bearer <token>`",
            TokenError::Missing.reason(),
            [],
        )
    })
}

/// The user a request acts for: the token's subject. A request that names another user in
/// its `user_id` field is refused with `PERMISSION_DENIED` (reason `USER_MISMATCH`), one whose
/// `user_id` is no valid id at all with `INVALID_ARGUMENT`; an empty field means the subject.
pub fn acting_user<T>(request: &tonic::Request<T>, claimed_user_id: &str) -> Result<String, Status> {
    let caller = caller(request)?;
    if !claimed_user_id.is_empty() {
        // A value that cannot be anyone's id is bad input, not someone else's name.
        crate::status::user_id(claimed_user_id)?;
    }
    if !claimed_user_id.is_empty() && claimed_user_id != caller.subject {
        return Err(with_reason(
            Code::PermissionDenied,
            "user_id must be the token's subject (or empty)",
            ErrorReason::UserMismatch,
            [("field", "user_id".to_owned())],
        ));
    }
    Ok(caller.subject.clone())
}

/// The caller, if it is an operator; else `PERMISSION_DENIED` (reason `ADMIN_SCOPE_REQUIRED`).
pub fn require_admin<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    let caller = caller(request)?;
    if !caller.admin {
        return Err(with_reason(
            Code::PermissionDenied,
            format!("this call needs the {ADMIN_SCOPE} scope"),
            ErrorReason::AdminScopeRequired,
            [],
        ));
    }
    Ok(caller)
}

/// The `authorization` metadata value for `token`.
pub fn bearer(token: &str) -> MetadataValue<tonic::metadata::Ascii> {
    match format!("Bearer {token}").parse() {
        Ok(value) => value,
        // A JWT is base64url and dots; only a caller passing garbage gets here.
        Err(_) => MetadataValue::from_static("Bearer invalid"),
    }
}

/// A client interceptor that sends one token on every call:
/// `XServiceClient::with_interceptor(channel, WithToken::new(&token))`.
#[derive(Clone)]
pub struct WithToken(MetadataValue<tonic::metadata::Ascii>);

impl WithToken {
    pub fn new(token: &str) -> Self {
        Self(bearer(token))
    }
}

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}
