//! Named crash points, for tests only (the `failpoints` feature, which the
//! test build turns on). With `REPLAYDB_FAILPOINT=<name>` in the
//! environment, the process aborts when it reaches that point: a test can
//! crash it exactly between two steps of a snapshot or a compaction.

/// Aborts the process if `REPLAYDB_FAILPOINT` names this point.
#[inline]
pub(crate) fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    {
        static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let armed = ARMED.get_or_init(|| std::env::var("REPLAYDB_FAILPOINT").ok());
        if armed.as_deref() == Some(name) {
            eprintln!("replaydb: failpoint {name} hit; aborting");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Bugs planted on purpose, to show that the power-loss simulation
/// catches them (`tests/sim_planted_bug.rs`). They can be planted only
/// with the `failpoints` feature; without it [`planted`] is always false
/// and the checks compile away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PlantedBug {
    /// Acknowledge an append in `Immediate` mode without its fdatasync.
    AckBeforeFsync = 1,
    /// Create a segment without fsyncing the WAL directory after its
    /// rename: its name may vanish at a power cut with the records in it.
    SkipSegmentDirSync = 2,
}

#[cfg(feature = "failpoints")]
static PLANTED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Plants `bug` in this process (`None` removes it).
#[cfg(feature = "failpoints")]
pub fn plant(bug: Option<PlantedBug>) {
    PLANTED.store(
        bug.map_or(0, |b| b as u8),
        std::sync::atomic::Ordering::SeqCst,
    );
}

/// Whether `bug` is planted.
#[inline]
pub(crate) fn planted(bug: PlantedBug) -> bool {
    #[cfg(feature = "failpoints")]
    {
        PLANTED.load(std::sync::atomic::Ordering::SeqCst) == bug as u8
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = bug;
        false
    }
}
