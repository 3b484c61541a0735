//! The Axon v1 protocol core: everything an independent client must agree on byte for
//! byte. Pure: no sockets, no files, no clocks.

pub mod admin;
pub mod auth;
pub mod close;
pub mod dm;
pub mod error;
pub mod event;
pub mod filter;
pub mod frame;
pub mod kind;
pub mod limits;
pub mod msgpack;
pub mod signature;
pub mod tags;
pub mod vectors;
pub mod visibility;

pub use error::{ErrorCode, ProtocolError};
pub use event::{Event, EventId, PublicKey, Tag};
pub use filter::{matches, Filter, TagFilter};
pub use frame::{Frame, RawEvent};
pub use limits::Limits;
pub use visibility::{visible, Viewer};
