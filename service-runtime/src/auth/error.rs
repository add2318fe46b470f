//! Why a token is refused, and the `UNAUTHENTICATED` answer that says so.

use tonic::{Code, Status};

use crate::status::{ErrorReason, with_reason};

/// Why a token was refused. [`Self::reason`] is the `ErrorInfo` reason the caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the authorization header is not `Bearer <JWT>`, or the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not EdDSA")]
    UnsupportedAlgorithm,
    #[error("the token's key id is not in the key set")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token is not meant for this audience")]
    WrongAudience,
    #[error("the token's subject is not a valid user id")]
    BadSubject,
}

impl TokenError {
    /// The `ErrorInfo` reason of this refusal.
    pub fn reason(self) -> ErrorReason {
        match self {
            Self::Missing => ErrorReason::TokenMissing,
            Self::Malformed => ErrorReason::TokenMalformed,
            Self::UnsupportedAlgorithm => ErrorReason::TokenUnsupportedAlgorithm,
            Self::UnknownKey => ErrorReason::TokenUnknownKey,
            Self::BadSignature => ErrorReason::TokenBadSignature,
            Self::Expired => ErrorReason::TokenExpired,
            Self::NotYetValid => ErrorReason::TokenNotYetValid,
            Self::WrongIssuer => ErrorReason::TokenWrongIssuer,
            Self::WrongAudience => ErrorReason::TokenWrongAudience,
            Self::BadSubject => ErrorReason::TokenBadSubject,
        }
    }

    /// The `UNAUTHENTICATED` answer. The message names the problem, never the token.
    pub fn status(self) -> Status {
        with_reason(Code::Unauthenticated, self.to_string(), self.reason(), [])
    }
}
