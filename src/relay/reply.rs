//! The reply frames a connection queues (OK, ERROR), and the protocol answer for each
//! storage failure (spec §8, §15).

use super::outbound::OutFrame;
use super::retry;
use super::store::StoreError;
use crate::protocol::frame::{ErrorMessage, OkMessage};
use crate::protocol::{ErrorCode, Frame, ProtocolError};

/// ERROR for `error`, naming the event `id` when known.
pub fn error_frame(error: &ProtocolError, id: Option<[u8; 32]>) -> OutFrame {
    OutFrame::Binary(Frame::Error(ErrorMessage::from_error(error, id)).encode())
}

/// ERROR for `error` that ends subscription `sub_id`.
pub fn sub_error_frame(error: &ProtocolError, sub_id: &str) -> OutFrame {
    let mut message = ErrorMessage::from_error(error, None);
    message.sub_id = Some(sub_id.to_owned());
    OutFrame::Binary(Frame::Error(message).encode())
}

/// OK for event (or key) `id`, with its seq when stored.
pub fn ok_frame(id: [u8; 32], seq: Option<u64>) -> OutFrame {
    OutFrame::Binary(Frame::Ok(OkMessage { id, seq }).encode())
}

/// The answer to a storage failure: 409 duplicate; 503 with a retry hint for a full disk,
/// a busy database and shutdown; 500 for the rest (nothing was stored).
pub fn store_error(error: &StoreError) -> ProtocolError {
    match error {
        StoreError::Duplicate => ProtocolError::new(ErrorCode::Duplicate, "an event with this id is already stored"),
        StoreError::Full(_) => {
            ProtocolError::new(ErrorCode::Unavailable, "the relay's disk is full; nothing was stored")
                .retry_after(retry::DISK_FULL)
        }
        StoreError::Busy(_) => ProtocolError::new(ErrorCode::Unavailable, "the database is busy; nothing was stored")
            .retry_after(retry::OVERLOAD),
        StoreError::Corrupt(reason) | StoreError::Storage(reason) => {
            ProtocolError::new(ErrorCode::Internal, format!("storage failure: {reason}"))
        }
        StoreError::Closed => {
            ProtocolError::new(ErrorCode::Unavailable, "the relay is shutting down").retry_after(retry::DRAIN)
        }
        StoreError::Unavailable(reason) => {
            ProtocolError::new(ErrorCode::Unavailable, format!("{reason}; try again")).retry_after(retry::CLUSTER_LOG)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_503_with_a_hint_and_corruption_is_500() {
        let full = store_error(&StoreError::Full("database or disk is full".into()));
        assert_eq!((full.code, full.retry_after_ms), (ErrorCode::Unavailable, Some(5000)));
        let corrupt = store_error(&StoreError::Corrupt("malformed".into()));
        assert_eq!((corrupt.code, corrupt.retry_after_ms), (ErrorCode::Internal, None));
        let closed = store_error(&StoreError::Closed);
        assert_eq!((closed.code, closed.retry_after_ms), (ErrorCode::Unavailable, Some(1000)));
        assert_eq!(store_error(&StoreError::Duplicate).code, ErrorCode::Duplicate);
    }
}
