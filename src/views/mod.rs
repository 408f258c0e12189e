//! Views: state derived by folding the log.
//!
//! A view is a named fold over events ([`View::apply`]) that can save its
//! state to, and load it from, tables of its own in a snapshot. Views are
//! registered when the database opens; the engine applies every committed
//! batch to every view, whole, before the batch becomes visible, so a read
//! through [`Db::view`](crate::Db::view) never sees half a batch and says
//! which LSN it reflects.

mod tables;

use std::any::Any;

use crate::error::Result;
use crate::stream::EventRef;

pub use tables::{ViewReader, ViewWriter};

/// A user's (or a built-in) fold over the log.
///
/// ```
/// use replaydb::{EventRef, Result, View, ViewReader, ViewWriter};
///
/// /// Events per stream.
/// #[derive(Clone, Default)]
/// struct Counts(std::collections::BTreeMap<String, u64>);
///
/// impl View for Counts {
///     fn name(&self) -> &str { "counts" }
///     fn schema_version(&self) -> u32 { 1 }
///     fn apply(&mut self, e: &EventRef<'_>) {
///         *self.0.entry(e.stream.to_string()).or_default() += 1;
///     }
///     fn reset(&mut self) { self.0.clear() }
///     fn save(&self, out: &mut ViewWriter<'_>) -> Result<()> {
///         for (k, v) in &self.0 {
///             out.put("counts", k.as_bytes(), &v.to_le_bytes())?;
///         }
///         Ok(())
///     }
///     fn load(&mut self, input: &ViewReader<'_>) -> Result<()> {
///         self.0.clear();
///         input.for_each("counts", |k, v| {
///             let n = u64::from_le_bytes(v.try_into().map_err(|_| input.bad_value("counts", k))?);
///             self.0.insert(String::from_utf8_lossy(k).into_owned(), n);
///             Ok(())
///         })
///     }
///     fn clone_view(&self) -> Box<dyn View> { Box::new(self.clone()) }
///     fn as_any(&self) -> &dyn std::any::Any { self }
/// }
/// ```
pub trait View: Send + Sync + 'static {
    /// A stable name: it names the view's tables in snapshots. ASCII
    /// letters, digits, `-` and `_`.
    fn name(&self) -> &str;

    /// The version of the state's layout. Change it when `save`/`load` or
    /// the meaning of the state changes: a snapshot of another version is
    /// not loaded, and the view is rebuilt from the log instead.
    fn schema_version(&self) -> u32;

    /// Folds one committed event into the state. Must not fail: an event
    /// the view does not understand is the view's to ignore or record.
    fn apply(&mut self, event: &EventRef<'_>);

    /// Empties the state (before a rebuild from the log).
    fn reset(&mut self);

    /// Writes the whole state into the view's own tables.
    fn save(&self, out: &mut ViewWriter<'_>) -> Result<()>;

    /// Replaces the state with what `save` wrote.
    fn load(&mut self, input: &ViewReader<'_>) -> Result<()>;

    /// A copy of the state, taken while writers wait; saving it happens
    /// after they go on. Keep it proportional to live state.
    fn clone_view(&self) -> Box<dyn View>;

    /// For typed access through [`Db::view`](crate::Db::view).
    fn as_any(&self) -> &dyn Any;
}

/// The registered views, as commands and readers see them.
pub struct ViewSet {
    pub(crate) views: Vec<Box<dyn View>>,
    /// LSN of the last event applied (0: none).
    pub(crate) applied_lsn: u64,
}

impl std::fmt::Debug for ViewSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewSet")
            .field(
                "views",
                &self
                    .views
                    .iter()
                    .map(|v| v.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("applied_lsn", &self.applied_lsn)
            .finish()
    }
}

impl ViewSet {
    pub(crate) fn new(views: Vec<Box<dyn View>>) -> ViewSet {
        ViewSet {
            views,
            applied_lsn: 0,
        }
    }

    /// The registered view of type `V`, if any.
    pub fn get<V: View>(&self) -> Option<&V> {
        self.views
            .iter()
            .find_map(|v| v.as_any().downcast_ref::<V>())
    }

    /// LSN of the last event the views reflect.
    pub fn applied_lsn(&self) -> u64 {
        self.applied_lsn
    }

    /// Applies one event to every view.
    pub(crate) fn apply(&mut self, event: &EventRef<'_>) {
        for v in &mut self.views {
            v.apply(event);
        }
        self.applied_lsn = event.lsn;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.views.is_empty()
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

/// Checks a view name: 1 to 64 bytes of ASCII letters, digits, `-`, `_`.
pub(crate) fn validate_view_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
