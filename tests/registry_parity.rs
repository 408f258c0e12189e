//! The registry keeps the original `pod-registry` crate's contract: its 29
//! tests, ported one for one under their names (from `conflict.rs`,
//! `lifecycle.rs`, `mutate.rs` and `table.rs` of HareK02/yoi's
//! `crates/pod-registry`), run against replaydb's registry. Where the
//! original speaks of workers, sessions and `workers.json`, this speaks of
//! pods, segments and the database directory.

use std::path::PathBuf;

use replaydb::Options;
use replaydb::registry::scope::overlaps;
use replaydb::registry::{Authority, Permission, Registry, RegistryError, ScopeRule, SegmentId};

fn write_rule(path: &str, recursive: bool) -> ScopeRule {
    ScopeRule::new(path, Permission::Write, recursive).unwrap()
}
fn read_rule(path: &str, recursive: bool) -> ScopeRule {
    ScopeRule::new(path, Permission::Read, recursive).unwrap()
}
fn delegation_scope(allow: Vec<ScopeRule>) -> Authority {
    Authority {
        allow,
        deny: Vec::new(),
    }
}
fn sock(name: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/{name}.sock"))
}
fn sid() -> SegmentId {
    uuid::Uuid::new_v4()
}
fn me() -> u32 {
    std::process::id()
}
fn open_empty(dir: &std::path::Path) -> Registry {
    Registry::open(dir, Options::default(), vec![]).unwrap()
}
/// `register_worker` / `register_worker_with_deny`: a top-level pod kept
/// registered (the original's table has no guard for it).
fn register(
    reg: &Registry,
    name: &str,
    allow: Vec<ScopeRule>,
    deny: Vec<ScopeRule>,
    segment: SegmentId,
) -> Result<(), RegistryError> {
    reg.register_pod(name, me(), sock(name), allow, deny, segment)
        .map(|g| drop(g.keep()))
}
fn delegate(
    reg: &Registry,
    spawner: &str,
    child: &str,
    allow: Vec<ScopeRule>,
    scope: Vec<ScopeRule>,
) -> Result<(), RegistryError> {
    reg.delegate_scope(
        spawner,
        child,
        me(),
        sock(child),
        allow,
        delegation_scope(scope),
    )
}
/// The original's usual start: `a` writes `/src` and delegates
/// `/src/core` to `b`.
fn a_then_b(reg: &Registry) {
    register(reg, "a", vec![write_rule("/src", true)], vec![], sid()).unwrap();
    delegate(
        reg,
        "a",
        "b",
        vec![write_rule("/src/core", true)],
        vec![write_rule("/src", true)],
    )
    .unwrap();
}
/// [`a_then_b`], and `b` delegates `/src/core/x` to `d`.
fn a_b_d(reg: &Registry) {
    a_then_b(reg);
    delegate(
        reg,
        "b",
        "d",
        vec![write_rule("/src/core/x", true)],
        vec![write_rule("/src/core", true)],
    )
    .unwrap();
}
fn competitor(err: RegistryError) -> String {
    match err {
        RegistryError::WriteConflict { competitor, .. } => competitor,
        other => panic!("expected WriteConflict, got {other:?}"),
    }
}

// ---- conflict.rs ----

#[test]
fn rules_overlap_prefix_relation() {
    assert!(overlaps(
        &write_rule("/src", true),
        &write_rule("/src/core", true)
    ));
    assert!(overlaps(
        &write_rule("/src/core", true),
        &write_rule("/src", true)
    ));
    assert!(!overlaps(
        &write_rule("/src", true),
        &write_rule("/docs", true)
    ));
}

#[test]
fn rules_overlap_non_recursive() {
    assert!(!overlaps(
        &write_rule("/src", false),
        &write_rule("/src/a/b", true)
    ));
    assert!(overlaps(
        &write_rule("/src", false),
        &write_rule("/src/child", false)
    ));
}

#[test]
fn conflict_detection_descends_to_real_owner() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    a_then_b(&reg);
    // Another top-level pod asking for /src/core/x is blamed on b, the
    // deepest owner, not a.
    let err = register(
        &reg,
        "x",
        vec![write_rule("/src/core/x", true)],
        vec![],
        sid(),
    )
    .unwrap_err();
    assert_eq!(competitor(err), "b");
}

#[test]
fn denied_write_region_is_not_claimed_by_restored_parent() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    register(
        &reg,
        "parent",
        vec![write_rule("/src", true)],
        vec![write_rule("/src/core", true)],
        sid(),
    )
    .unwrap();
    register(
        &reg,
        "child",
        vec![write_rule("/src/core", true)],
        vec![],
        sid(),
    )
    .unwrap();
}

#[test]
fn partial_deny_does_not_hide_parent_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    register(
        &reg,
        "parent",
        vec![write_rule("/src", true)],
        vec![write_rule("/src/core", true)],
        sid(),
    )
    .unwrap();
    let err = register(&reg, "other", vec![write_rule("/src", true)], vec![], sid()).unwrap_err();
    match err {
        RegistryError::WriteConflict {
            competitor,
            competitor_rule,
            ..
        } => {
            assert_eq!(competitor, "parent");
            assert_eq!(competitor_rule.target, PathBuf::from("/src"));
        }
        other => panic!("expected WriteConflict, got {other:?}"),
    }
}

// ---- lifecycle.rs ----

#[test]
fn scope_allocation_guard_releases_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    let guard = reg
        .register_pod(
            "a",
            me(),
            sock("a"),
            vec![write_rule("/src", true)],
            vec![],
            sid(),
        )
        .unwrap();
    assert!(reg.find("a").unwrap().is_some());
    drop(guard);
    assert!(reg.find("a").unwrap().is_none());
}

#[test]
fn adopt_allocation_rewrites_pid_and_releases_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    // A pre-reservation under the spawner's pid, as delegate_scope makes.
    register(
        &reg,
        "spawner",
        vec![write_rule("/tmp", true)],
        vec![],
        sid(),
    )
    .unwrap();
    delegate(
        &reg,
        "spawner",
        "child",
        vec![write_rule("/tmp/child", true)],
        vec![write_rule("/tmp", true)],
    )
    .unwrap();
    // Another live process: the test's parent.
    let child_pid = std::os::unix::process::parent_id();
    let guard = reg.adopt_allocation("child", child_pid, sid()).unwrap();
    assert_eq!(reg.find("child").unwrap().unwrap().pid, child_pid);
    drop(guard);
    assert!(reg.find("child").unwrap().is_none());
}

#[test]
fn adopt_allocation_errors_on_unknown_pod() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    let err = reg.adopt_allocation("ghost", 42, sid()).unwrap_err();
    assert!(matches!(err, RegistryError::UnknownPod(ref n) if n == "ghost"));
}

#[test]
fn lookup_session_returns_live_writer_info() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    let s = sid();
    let guard = reg
        .register_pod(
            "live",
            me(),
            sock("live"),
            vec![write_rule("/work", true)],
            vec![],
            s,
        )
        .unwrap();
    let (name, socket, pid) = reg.lookup_segment(s).unwrap().expect("a live writer");
    assert_eq!(name, "live");
    assert_eq!(socket, sock("live"));
    assert_eq!(pid, me());
    drop(guard);
    // Released with its guard: the lookup finds nobody again.
    assert!(reg.lookup_segment(s).unwrap().is_none());
}

#[test]
fn update_session_rewrites_allocation_session_id() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    let (original, updated) = (sid(), sid());
    let _guard = reg
        .register_pod(
            "p",
            me(),
            sock("p"),
            vec![write_rule("/work", true)],
            vec![],
            original,
        )
        .unwrap();
    reg.update_segment("p", updated).unwrap();
    assert!(reg.lookup_segment(original).unwrap().is_none());
    assert_eq!(reg.lookup_segment(updated).unwrap().unwrap().0, "p");
}

#[test]
fn update_session_rejects_when_target_already_held() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    let (s_a, s_b) = (sid(), sid());
    let _g_a = reg
        .register_pod(
            "a",
            me(),
            sock("a"),
            vec![write_rule("/work/a", true)],
            vec![],
            s_a,
        )
        .unwrap();
    let _g_b = reg
        .register_pod(
            "b",
            me(),
            sock("b"),
            vec![write_rule("/work/b", true)],
            vec![],
            s_b,
        )
        .unwrap();
    // a cannot take b's live segment.
    match reg.update_segment("a", s_b).unwrap_err() {
        RegistryError::SegmentConflict {
            segment, holder, ..
        } => {
            assert_eq!(holder, "b");
            assert_eq!(segment, s_b);
        }
        other => panic!("expected SegmentConflict, got {other:?}"),
    }
}

// ---- mutate.rs ----

#[test]
fn register_detects_write_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    register(&reg, "a", vec![write_rule("/src", true)], vec![], sid()).unwrap();
    let err = register(
        &reg,
        "b",
        vec![write_rule("/src/core", true)],
        vec![],
        sid(),
    )
    .unwrap_err();
    assert_eq!(competitor(err), "a");
}

#[test]
fn duplicate_worker_name_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    register(&reg, "a", vec![write_rule("/src", true)], vec![], sid()).unwrap();
    let err = reg
        .register_pod(
            "a",
            me(),
            sock("a2"),
            vec![write_rule("/docs", true)],
            vec![],
            sid(),
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::DuplicatePodName(ref n) if n == "a"));
}

#[test]
fn delegate_must_be_subset() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    register(&reg, "a", vec![write_rule("/src", true)], vec![], sid()).unwrap();
    let err = delegate(
        &reg,
        "a",
        "b",
        vec![write_rule("/docs", true)],
        vec![write_rule("/src", true)],
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::NotSubset { .. }), "{err:?}");
}

#[test]
fn delegate_uses_delegation_scope_not_direct_effective_write() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    register(
        &reg,
        "orchestrator",
        vec![read_rule("/workspace", true)],
        vec![],
        sid(),
    )
    .unwrap();
    delegate(
        &reg,
        "orchestrator",
        "coder",
        vec![write_rule("/workspace/.worktree/task", true)],
        vec![write_rule("/workspace", true)],
    )
    .unwrap();
    let coder = reg.find("coder").unwrap().expect("coder allocation");
    assert_eq!(coder.delegated_from.as_deref(), Some("orchestrator"));
}

#[test]
fn delegate_succeeds_within_parent_scope() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    a_then_b(&reg);
    assert_eq!(reg.allocations().unwrap().len(), 2);
    // b holds /src/core now, so a's effective write no longer covers it.
    assert!(
        !reg.has_effective("a", &write_rule("/src/core", true))
            .unwrap()
    );
    // a still covers what it did not hand out.
    assert!(
        reg.has_effective("a", &write_rule("/src/other", true))
            .unwrap()
    );
}

#[test]
fn delegate_rejects_sibling_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    a_then_b(&reg);
    // A sibling c, from a, asks for /src/core/sub: inside b's scope.
    let err = delegate(
        &reg,
        "a",
        "c",
        vec![write_rule("/src/core/sub", true)],
        vec![write_rule("/src", true)],
    )
    .unwrap_err();
    assert_eq!(competitor(err), "b");
}

#[test]
fn release_reparents_children() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    a_b_d(&reg);
    reg.release_pod("b").unwrap();
    let d = reg.find("d").unwrap().unwrap();
    assert_eq!(d.delegated_from.as_deref(), Some("a"));
    assert!(reg.find("b").unwrap().is_none());
}

#[test]
fn reclaim_delegated_scope_removes_child_and_one_parent_deny_layer() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    let delegated_rule = write_rule("/src/core", true);
    register(
        &reg,
        "a",
        vec![write_rule("/src", true)],
        vec![delegated_rule.clone(), delegated_rule.clone()],
        sid(),
    )
    .unwrap();
    register(&reg, "b", vec![delegated_rule.clone()], vec![], sid()).unwrap();

    reg.reclaim_delegated_scope("a", "b", vec![delegated_rule.clone()])
        .unwrap();
    assert_eq!(
        reg.find("a").unwrap().unwrap().deny,
        vec![delegated_rule.clone()]
    );
    assert!(reg.find("b").unwrap().is_none());

    reg.reclaim_delegated_scope("a", "b", vec![delegated_rule.clone()])
        .unwrap();
    assert!(
        reg.find("a").unwrap().unwrap().deny.is_empty(),
        "with the child gone, a call still reclaims one matching parent deny"
    );
}

#[test]
fn reclaim_delegated_scope_removes_parent_deny_when_child_allocation_missing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    let delegated_rule = write_rule("/src/core", true);
    register(
        &reg,
        "a",
        vec![write_rule("/src", true)],
        vec![delegated_rule.clone()],
        sid(),
    )
    .unwrap();
    reg.reclaim_delegated_scope("a", "missing", vec![delegated_rule])
        .unwrap();
    assert!(reg.find("a").unwrap().unwrap().deny.is_empty());
    assert!(
        reg.has_effective("a", &write_rule("/src/core", true))
            .unwrap(),
        "the parent writes the reclaimed scope again"
    );
}

/// A pid the liveness probe below treats as dead.
const FAKE_DEAD_PID: u32 = 0xffff_fff0;

#[test]
fn reclaim_stale_reparents_and_removes_dead_entries() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    a_b_d(&reg);
    // b "crashes": its pid becomes one the probe treats as dead (the
    // original rewrites the table; here b adopts its reservation).
    reg.adopt_allocation("b", FAKE_DEAD_PID, sid())
        .unwrap()
        .keep();
    let gone = reg.reclaim_stale_with(|pid| pid != FAKE_DEAD_PID).unwrap();
    assert_eq!(gone, vec!["b".to_string()]);
    assert!(reg.find("b").unwrap().is_none());
    let d = reg.find("d").unwrap().unwrap();
    assert_eq!(d.delegated_from.as_deref(), Some("a"));
}

#[test]
fn read_rules_do_not_conflict_with_write() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    register(&reg, "a", vec![write_rule("/src", true)], vec![], sid()).unwrap();
    // b only reads under the same tree: allowed.
    register(&reg, "b", vec![read_rule("/src", true)], vec![], sid()).unwrap();
    assert_eq!(reg.allocations().unwrap().len(), 2);
}

#[test]
fn releasing_pod_reopens_scope_for_fresh_registration() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    register(&reg, "a", vec![write_rule("/src", true)], vec![], sid()).unwrap();
    reg.release_pod("a").unwrap();
    register(&reg, "b", vec![write_rule("/src", true)], vec![], sid()).unwrap();
}

#[test]
fn delegated_scope_returns_to_parent_on_release() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    a_then_b(&reg);
    assert!(
        !reg.has_effective("a", &write_rule("/src/core", true))
            .unwrap()
    );
    reg.release_pod("b").unwrap();
    // /src/core is back in a's effective write scope.
    assert!(
        reg.has_effective("a", &write_rule("/src/core", true))
            .unwrap()
    );
}

#[test]
fn register_pod_rejects_session_id_collision() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    let shared = sid();
    register(
        &reg,
        "first",
        vec![write_rule("/work/a", true)],
        vec![],
        shared,
    )
    .unwrap();
    // Another pod asking for the same segment: both would write it.
    let err = register(
        &reg,
        "second",
        vec![write_rule("/work/b", true)],
        vec![],
        shared,
    )
    .unwrap_err();
    match err {
        RegistryError::SegmentConflict {
            segment, holder, ..
        } => {
            assert_eq!(segment, shared);
            assert_eq!(holder, "first");
        }
        other => panic!("expected SegmentConflict, got {other:?}"),
    }
}

// ---- table.rs ----

#[test]
fn open_creates_empty_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry");
    let reg = open_empty(&path);
    assert!(reg.allocations().unwrap().is_empty());
    assert!(path.join("store.redb").exists());
}

#[test]
fn open_creates_file_with_owner_only_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("yoi");
    let reg = open_empty(&parent);
    register(&reg, "a", vec![write_rule("/src", true)], vec![], sid()).unwrap();
    reg.db().expect("embedded").checkpoint().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&parent), 0o700, "dir mode = {:o}", mode(&parent));
    // Every file and directory the database made, however deep.
    let mut todo = vec![parent.clone()];
    let mut files = 0;
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{} mode = {:o}", p.display(), mode(&p));
                todo.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{} mode = {:o}", p.display(), mode(&p));
                files += 1;
            }
        }
    }
    assert!(files >= 2, "the store and the log at least");
}

#[test]
fn save_and_reopen_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = open_empty(dir.path());
        register(&reg, "a", vec![write_rule("/src", true)], vec![], sid()).unwrap();
    }
    let reg = open_empty(dir.path());
    let all = reg.allocations().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].pod_name, "a");
}

#[test]
fn find_by_session_skips_none_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open_empty(dir.path());
    // delegate_scope leaves the segment unset until adopt_allocation
    // fills it in: find_by_segment must not match such a reservation, or
    // a child still spawning would shadow itself.
    register(&reg, "parent", vec![write_rule("/p", true)], vec![], sid()).unwrap();
    delegate(
        &reg,
        "parent",
        "child",
        vec![write_rule("/p/sub", true)],
        vec![write_rule("/p", true)],
    )
    .unwrap();
    assert_eq!(reg.find("child").unwrap().unwrap().segment_id, None);
    let target = sid();
    assert!(reg.find_by_segment(target).unwrap().is_none());
    // Adopted with that segment, the same allocation is found.
    reg.adopt_allocation("child", me(), target).unwrap().keep();
    assert_eq!(
        reg.find_by_segment(target).unwrap().unwrap().pod_name,
        "child"
    );
}
