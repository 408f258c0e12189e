//! replaydb: an embedded, event-sourced database.
//!
//! Events are appended to named streams in a log of CRC-checked records,
//! group-committed with one fdatasync for every writer waiting. A store
//! (one redb database) holds everything the log derives: stream versions,
//! the history of every stream, and each view's tables, kept up to date
//! incrementally and checkpointed durably; the log is its redo log.
//!
//! The public API at a glance:
//!
//! - [`Db`]: [`Db::open`], [`Db::append`] / [`Db::append_async`],
//!   [`Db::execute`] (commands), [`Db::read`], [`Db::read_stream`],
//!   [`Db::replay`], [`Db::subscribe`], [`Db::view`] / [`Db::view_tables`],
//!   [`Db::set_retention`], [`Db::sync`], [`Db::checkpoint`],
//!   [`Db::backup`], [`Db::stats`], [`Db::recovery_report`].
//! - [`Database`]: the same operations on an embedded [`Db`] and on a
//!   [`client::Client`] of a database another process serves
//!   ([`Db::serve`], [`server`]; the protocol is `docs/PROTOCOL.md`).
//! - [`SharedDb`]: many processes open one database; the one holding its
//!   lock serves the others, and one of them takes over when it dies.
//! - [`Options`] and [`Durability`]: what a crash can lose.
//! - [`View`], [`ViewTables`], [`ViewSet`]: your own folds, with tables in
//!   the store; [`registry`], [`runtime`] and [`kv`] are built in,
//!   opt-in like any other.
//! - [`Retention`]: what a stream's history keeps.
//! - [`log::Log`]: the seam between the engine and the log, with the
//!   local [`log::WalLog`] and [`log::MemoryLog`].
//! - [`storage`]: the file-system seam under the log and the store,
//!   with [`storage::OsStorage`] and (feature `simulation`)
//!   `storage::SimDisk`, a disk that loses, keeps or tears unsynced
//!   writes at a simulated power cut.
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

pub mod client;
mod database;
mod engine;
mod error;
// Crash points compile to nothing without the `failpoints` feature; the
// module is public only with it (the tests plant bugs through it).
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub mod failpoint;
#[cfg(not(feature = "failpoints"))]
mod failpoint;
pub mod kv;
// Internal; public only to the tests and fuzz targets (feature
// `simulation`), never API.
#[cfg(feature = "simulation")]
#[doc(hidden)]
pub mod layout;
#[cfg(not(feature = "simulation"))]
mod layout;
pub mod log;
mod options;
pub mod registry;
mod remote;
mod retention;
pub mod runtime;
pub mod server;
mod shared;
#[cfg(feature = "simulation")]
pub mod simulation;
// Internal; public only to the tests and fuzz targets (feature
// `simulation`), never API.
#[cfg(feature = "simulation")]
#[doc(hidden)]
pub mod snapshot;
#[cfg(not(feature = "simulation"))]
mod snapshot;
pub mod storage;
mod store;
mod stream;
mod views;
// Internal; public only to the tests and fuzz targets (feature
// `simulation`), never API.
#[cfg(feature = "simulation")]
#[doc(hidden)]
pub mod wal;
#[cfg(not(feature = "simulation"))]
mod wal;

pub use database::Database;
pub use engine::maintenance::{Repair, VerifyReport, verify};
pub use engine::{CheckpointOutcome, Db, Stats, Subscription};
pub use error::{Error, Result};
pub use options::{
    Durability, LogKind, Options, RECORD_BYTES_LIMIT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_LIMIT,
    SEGMENT_BYTES_MIN,
};
pub use retention::{RETENTION_STREAM, Retention};
pub use shared::{SharedDb, SharedSubscription, ViewsFactory};
pub use store::StoreReport;
pub use stream::{
    Appended, Event, EventRef, ExpectedVersion, STREAM_NAME_BYTES_MAX,
    validate_internal_stream_name, validate_stream_name,
};
pub use views::{AtLsn, View, ViewHistory, ViewSet, ViewTables, ViewTablesRead};
pub use wal::recovery::{RecoveryReport, TornTail};
pub use wal::repair::{RepairAction, RepairPlan};
