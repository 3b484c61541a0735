//! Protocol error codes (spec §8) and the error type that carries them.

use std::fmt;

/// The numeric codes of spec §8, for matching a code read off the wire (the one place
/// the numbers are written; [`ErrorCode`] maps to and from them).
pub mod codes {
    /// 400 invalid.
    pub const INVALID: u16 = 400;
    /// 401 not authenticated / bad AUTH signature.
    pub const AUTH_REQUIRED: u16 = 401;
    /// 403 not allowed.
    pub const RESTRICTED: u16 = 403;
    /// 409 duplicate.
    pub const DUPLICATE: u16 = 409;
    /// 410 expired.
    pub const EXPIRED: u16 = 410;
    /// 412 job lease not held (spec §14).
    pub const LEASE_LOST: u16 = 412;
    /// 413 too large.
    pub const TOO_LARGE: u16 = 413;
    /// 429 rate limited.
    pub const RATE_LIMITED: u16 = 429;
    /// 500 storage failure.
    pub const INTERNAL: u16 = 500;
    /// 503 overloaded, shutting down, or subscription overflow.
    pub const UNAVAILABLE: u16 = 503;
}

/// A numeric error code a relay sends in ERROR frames (spec §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the frame or event is malformed or breaks a rule.
    Invalid,
    /// 401: not authenticated, or a bad AUTH signature.
    AuthRequired,
    /// 403: authenticated but not allowed.
    Restricted,
    /// 409: duplicate event, or an admin change that conflicts with relay.yaml.
    Duplicate,
    /// 410: the event's `expires_at` is already past.
    Expired,
    /// 412: the subscription does not hold the job's current lease (spec §14).
    LeaseLost,
    /// 413: content or frame too large.
    TooLarge,
    /// 429: rate limited.
    RateLimited,
    /// 500: storage failure (nothing partially stored).
    Internal,
    /// 503: overloaded, shutting down, or subscription overflow.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::Invalid,
        ErrorCode::AuthRequired,
        ErrorCode::Restricted,
        ErrorCode::Duplicate,
        ErrorCode::Expired,
        ErrorCode::LeaseLost,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The numeric code carried on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::Invalid => codes::INVALID,
            ErrorCode::AuthRequired => codes::AUTH_REQUIRED,
            ErrorCode::Restricted => codes::RESTRICTED,
            ErrorCode::Duplicate => codes::DUPLICATE,
            ErrorCode::Expired => codes::EXPIRED,
            ErrorCode::LeaseLost => codes::LEASE_LOST,
            ErrorCode::TooLarge => codes::TOO_LARGE,
            ErrorCode::RateLimited => codes::RATE_LIMITED,
            ErrorCode::Internal => codes::INTERNAL,
            ErrorCode::Unavailable => codes::UNAVAILABLE,
        }
    }

    /// Maps a wire code back to a known code, if it is one.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        Some(match code {
            codes::INVALID => ErrorCode::Invalid,
            codes::AUTH_REQUIRED => ErrorCode::AuthRequired,
            codes::RESTRICTED => ErrorCode::Restricted,
            codes::DUPLICATE => ErrorCode::Duplicate,
            codes::EXPIRED => ErrorCode::Expired,
            codes::LEASE_LOST => ErrorCode::LeaseLost,
            codes::TOO_LARGE => ErrorCode::TooLarge,
            codes::RATE_LIMITED => ErrorCode::RateLimited,
            codes::INTERNAL => ErrorCode::Internal,
            codes::UNAVAILABLE => ErrorCode::Unavailable,
            _ => return None,
        })
    }

    /// The short lowercase word an ERROR message starts with (spec §6).
    pub fn prefix(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::AuthRequired => "auth-required",
            ErrorCode::Restricted => "restricted",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::Expired => "expired",
            ErrorCode::LeaseLost => "lease-lost",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Internal => "error",
            ErrorCode::Unavailable => "error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// A protocol rule was broken; carries the code to answer with and a human reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.prefix())]
pub struct ProtocolError {
    /// What a program should act on.
    pub code: ErrorCode,
    /// Human text, without the prefix word.
    pub reason: String,
    /// When to try again (spec §15): ERROR 429 always, 503 for overload, shutdown or a
    /// full disk.
    pub retry_after_ms: Option<u64>,
}

impl ProtocolError {
    /// Builds an error with the given code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        ProtocolError { code, reason: reason.into(), retry_after_ms: None }
    }

    /// The same error with a retry hint (spec §15), in whole milliseconds rounded up.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        let millis = wait.as_nanos().div_ceil(1_000_000);
        self.retry_after_ms = Some(u64::try_from(millis).unwrap_or(u64::MAX));
        self
    }

    /// A 400 `invalid:` error.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, reason)
    }

    /// The full ERROR message text: `prefix: reason`.
    pub fn message(&self) -> String {
        self.to_string()
    }
}
