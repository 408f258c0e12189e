//! The write-ahead log: CRC-checked records in size-limited segments.
//!
//! - [`format`](mod@format): bytes on disk, encode and decode.
//! - [`segment`]: creating and mapping segment files.
//! - [`scan`]: walking a segment, torn tail versus corruption.
//! - [`index`]: where records and stream batches are.
//! - [`writer`]: appending to the tail, rolling segments.
//! - [`recovery`]: opening the log.
//! - [`repair`]: cutting damage away, keeping the cut bytes.
//! - [`settings`]: the format settings fixed at creation.
//! - [`log`](mod@log): all of it as a [`crate::log::Log`].
//!
//! The engine talks to the log only through the `Log` trait, so that a
//! replicated log can stand where these files stand.

pub mod format;
pub mod index;
pub mod log;
pub mod recovery;
pub mod repair;
pub mod scan;
pub mod segment;
pub mod settings;
pub mod writer;

pub use log::WalLog;
