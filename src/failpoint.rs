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
