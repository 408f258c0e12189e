//! The write-ahead log: CRC-checked records in size-limited segments.
//!
//! - [`format`](mod@format): bytes on disk, encode and decode.
//! - [`segment`]: creating and mapping segment files.
//! - [`scan`]: walking a segment, torn tail versus corruption.
//! - [`index`]: where records and stream batches are.
//! - [`writer`]: appending to the tail, rolling segments.
//! - [`recovery`]: opening the log.
//! - [`repair`]: cutting damage away, keeping the cut bytes.
//!
//! The engine talks to the log through a narrow seam (write numbered
//! records, sync, read slices from an LSN) so that a replicated log can
//! later stand where these files stand.

pub mod format;
pub mod index;
pub mod recovery;
pub mod repair;
pub mod scan;
pub mod segment;
pub mod writer;
