//! replaydb: an embedded, event-sourced database.
//!
//! Events are appended to named streams in an append-only write-ahead log
//! of CRC-checked records, group-committed with one fdatasync for every
//! writer waiting; state is derived by replaying the log.
//!
//! The public API at a glance:
//!
//! - [`Db`]: [`Db::open`], [`Db::append`] / [`Db::append_async`],
//!   [`Db::read`], [`Db::read_stream`], [`Db::replay`], [`Db::subscribe`],
//!   [`Db::sync`], [`Db::snapshot`], [`Db::stats`], [`Db::recovery_report`].
//! - [`Options`] and [`Durability`]: what a crash can lose.
//! - [`storage`]: the file-system seam under the log and the snapshots,
//!   with [`storage::OsStorage`] and [`storage::SimDisk`], a disk that
//!   loses, keeps or tears unsynced writes at a simulated power cut.
//! - `simulation` (feature `simulation`): the seeded power-loss simulation
//!   against a model that the tests and `fuzz/` run.
//! - [`ExpectedVersion`], [`Event`], [`EventRef`], [`Appended`].
//! - [`Subscription`]: blocking iterator, async `next_async`, `Stream`.
//! - [`verify`] and [`Repair`]: offline checks and explicit repair.
//! - [`Error`]: every failure, typed.
//!
//! On-disk format: `docs/FORMAT.md`. Design and recovery rules:
//! `docs/DESIGN.md`.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![warn(missing_docs)]

mod engine;
mod error;
#[doc(hidden)]
pub mod failpoint;
pub mod layout;
mod options;
pub mod registry;
#[cfg(feature = "simulation")]
pub mod simulation;
pub mod snapshot;
pub mod storage;
mod stream;
mod views;
pub mod wal;

pub use engine::maintenance::{Repair, VerifyReport, verify};
pub use engine::{Db, Stats, Subscription};
pub use error::{Error, Result};
pub use options::{
    Durability, Options, RECORD_BYTES_LIMIT, SEGMENT_BYTES_LIMIT, SEGMENT_BYTES_MIN,
};
pub use stream::{
    Appended, Event, EventRef, ExpectedVersion, STREAM_NAME_BYTES_MAX, validate_stream_name,
};
pub use views::{AtLsn, View, ViewReader, ViewSet, ViewWriter};
pub use wal::recovery::{RecoveryReport, TornTail};
pub use wal::repair::{RepairAction, RepairPlan};
