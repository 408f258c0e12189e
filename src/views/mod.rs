//! Views: state derived by folding the log.
//!
//! A view is a named fold over events ([`View::apply`]). It keeps its state
//! in tables of its own in the store ([`ViewTables`]), written inside the
//! transaction that applies the events, and may also keep a copy in memory
//! (small views, such as the registry) that [`View::load`] rebuilds from
//! those tables at open. The engine applies every committed batch to
//! every view, whole, before it is visible to readers; a read through
//! [`Db::view`](crate::Db::view) or [`Db::view_tables`](crate::Db::view_tables)
//! never sees half a batch and says which LSN it reflects.

mod tables;

use std::any::Any;

use crate::error::Result;
use crate::stream::EventRef;

pub(crate) use tables::TablesAt;
pub use tables::{ViewTables, ViewTablesRead};

/// A user's (or a built-in) fold over the log.
///
/// State that can grow large belongs in the view's tables; only what is
/// small should live in the view's own fields. A checkpoint then costs
/// what changed, whatever the size of the state.
///
/// ```
/// use replaydb::{EventRef, Result, View, ViewTables, ViewTablesRead};
///
/// /// Events per stream, kept in the view's table "counts".
/// #[derive(Default)]
/// struct Counts;
///
/// impl View for Counts {
///     fn name(&self) -> &str { "counts" }
///     fn schema_version(&self) -> u32 { 1 }
///     fn apply(&mut self, e: &EventRef<'_>, tables: &mut ViewTables<'_>) -> Result<()> {
///         let key = e.stream.as_bytes();
///         let n = match tables.read().get("counts", key)? {
///             Some(v) => u64::from_le_bytes(v.try_into().unwrap_or_default()),
///             None => 0,
///         };
///         tables.put("counts", key, &(n + 1).to_le_bytes())
///     }
///     fn reset(&mut self) {}
///     fn as_any(&self) -> &dyn std::any::Any { self }
/// }
/// ```
pub trait View: Send + Sync + 'static {
    /// A stable name: it names the view's tables in the store. ASCII
    /// letters, digits, `-` and `_`.
    fn name(&self) -> &str;

    /// The version of the state's layout. Change it when the tables or the
    /// meaning of the state change: the view's tables are then dropped and
    /// it is rebuilt from the history the store holds.
    fn schema_version(&self) -> u32;

    /// Folds one committed event into the state. `tables` write inside the
    /// transaction that applies it. An event the view does not understand
    /// is the view's to ignore or record; an error here is a storage
    /// failure, and poisons the handle.
    fn apply(&mut self, event: &EventRef<'_>, tables: &mut ViewTables<'_>) -> Result<()>;

    /// Rebuilds what the view keeps in memory from its tables, at open.
    /// Views that keep everything in their tables need not implement it.
    fn load(&mut self, tables: &ViewTablesRead<'_>) -> Result<()> {
        let _ = tables;
        Ok(())
    }

    /// Brings the view's tables from schema version `from_version` to
    /// [`View::schema_version`] in place, reading what it needs of the
    /// history through `history`; returns whether it did. Called only when
    /// the history no longer starts at LSN 1 (a database migrated from a
    /// compacted one), so a rebuild is impossible; otherwise a changed
    /// schema is always rebuilt from the history. The default migrates
    /// nothing, and the open fails with `ViewVersion`.
    fn migrate(
        &mut self,
        from_version: u32,
        tables: &mut ViewTables<'_>,
        history: &mut ViewHistory<'_>,
    ) -> Result<bool> {
        let _ = (from_version, tables, history);
        Ok(false)
    }

    /// Empties what the view keeps in memory (before a rebuild; the engine
    /// drops its tables itself).
    fn reset(&mut self);

    /// For typed access through [`Db::view`](crate::Db::view).
    fn as_any(&self) -> &dyn Any;
}

/// The history the store holds, as a view's migration reads it.
pub struct ViewHistory<'a> {
    pub(crate) read: &'a crate::store::StoreRead,
}

impl ViewHistory<'_> {
    /// Calls `visit` with every event of `stream` the history holds, from
    /// the first held version on, until it returns `false`.
    pub fn stream(&self, stream: &str, visit: impl FnMut(EventRef<'_>) -> bool) -> Result<()> {
        let from = self
            .read
            .stream_meta(stream)?
            .map_or(1, |m| m.first_held_version);
        self.read.visit_stream(stream, from, visit)
    }
}

/// A registered view and the LSN of the last event it folded.
pub(crate) struct ViewSlot {
    pub view: Box<dyn View>,
    /// The view's name, kept apart so the view can be borrowed mutably
    /// while its tables are named.
    pub name: String,
    pub applied_lsn: u64,
}

impl ViewSlot {
    pub(crate) fn new(view: Box<dyn View>, applied_lsn: u64) -> ViewSlot {
        ViewSlot {
            name: view.name().to_string(),
            view,
            applied_lsn,
        }
    }
}

/// The registered views, as the engine keeps them.
pub(crate) struct ViewStates {
    pub slots: Vec<ViewSlot>,
    /// LSN of the last event every view reflects.
    pub applied_lsn: u64,
}

impl std::fmt::Debug for ViewStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewStates")
            .field(
                "views",
                &self
                    .slots
                    .iter()
                    .map(|s| (s.view.name().to_string(), s.applied_lsn))
                    .collect::<Vec<_>>(),
            )
            .field("applied_lsn", &self.applied_lsn)
            .finish()
    }
}

/// The registered views, as commands and readers see them: each view's
/// memory, its tables at the same commit, and the LSN they reflect.
pub struct ViewSet<'a> {
    pub(crate) slots: &'a [ViewSlot],
    pub(crate) applied_lsn: u64,
    pub(crate) at: TablesAt<'a>,
    pub(crate) path: &'a std::path::Path,
}

impl ViewSet<'_> {
    /// The registered view of type `V`, if any.
    pub fn get<V: View>(&self) -> Option<&V> {
        self.slots
            .iter()
            .find_map(|s| s.view.as_any().downcast_ref::<V>())
    }

    /// The tables of the registered view of type `V`, if any.
    pub fn tables<V: View>(&self) -> Option<ViewTablesRead<'_>> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.view.as_any().downcast_ref::<V>().is_some())?;
        Some(ViewTablesRead {
            at: self.at,
            view: &slot.name,
            path: self.path,
        })
    }

    /// LSN of the last event the views reflect.
    pub fn applied_lsn(&self) -> u64 {
        self.applied_lsn
    }
}

/// A value read from the views, with the LSN it reflects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtLsn<T> {
    /// What was read.
    pub value: T,
    /// The LSN of the last event the views had applied.
    pub lsn: u64,
}

/// Appends `s` to a view-table key behind its length (u32 big-endian), so
/// that keys starting with it are exactly one range whatever bytes it
/// holds (`rt` never prefixes `rt-1`'s keys). Callers bound their strings
/// far below `u32::MAX` before they reach a key.
pub(crate) fn push_len_prefixed(key: &mut Vec<u8>, s: &str) {
    key.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    key.extend_from_slice(s.as_bytes());
}

/// A view row as MessagePack with field names (optional fields may be
/// left out, and fields added later with defaults).
pub(crate) fn encode_row<T: serde::Serialize>(op: &'static str, row: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(row).map_err(|e| crate::Error::Encode {
        op,
        reason: e.to_string(),
    })
}

/// Checks a view name: 1 to 64 bytes of ASCII letters, digits, `-`, `_`.
pub(crate) fn validate_view_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
