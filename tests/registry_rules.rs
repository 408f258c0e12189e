//! The registry's rules beyond the original crate's own tests (those are
//! `registry_parity.rs`): the ownership walk with several owners, deny
//! layers, reclaim with children gone or elsewhere, stale reclaim that is
//! written even when the operation is refused, paged history, the CLI, and
//! everything as events that survive reopen.

mod common;

use replaydb::Options;
use replaydb::registry::{
    Authority, Change, Permission, Registry, RegistryError, RemovalReason, ScopeRule,
};
use uuid::Uuid;

fn w(t: &str) -> ScopeRule {
    ScopeRule::write(t).unwrap()
}
fn r(t: &str) -> ScopeRule {
    ScopeRule::read(t).unwrap()
}
fn me() -> u32 {
    std::process::id()
}
fn sid() -> Uuid {
    Uuid::new_v4()
}
fn open(dir: &std::path::Path) -> Registry {
    Registry::open(dir, Options::default(), vec![]).unwrap()
}
fn authority(allow: Vec<ScopeRule>) -> Authority {
    Authority {
        allow,
        deny: vec![],
    }
}
/// A pid that is certainly dead: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn register(reg: &Registry, name: &str, allow: Vec<ScopeRule>) -> Result<(), RegistryError> {
    reg.register_pod(
        name,
        me(),
        format!("/run/{name}.sock"),
        allow,
        vec![],
        sid(),
    )
    .map(|g| drop(g.keep()))
}

#[test]
fn a_delegated_write_is_blamed_on_the_child_and_a_sibling_conflicts_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    register(&reg, "a", vec![w("/src")]).unwrap();
    reg.delegate_scope(
        "a",
        "b",
        me(),
        "/run/b.sock",
        vec![w("/src/core")],
        authority(vec![w("/src")]),
    )
    .unwrap();
    match register(&reg, "x", vec![w("/src/core/x")]) {
        Err(RegistryError::WriteConflict {
            competitor,
            competitor_rule,
            rule,
        }) => {
            assert_eq!(competitor, "b");
            assert_eq!(competitor_rule, w("/src/core"));
            assert_eq!(rule, w("/src/core/x"));
        }
        other => panic!("{other:?}"),
    }
    // A sibling delegated from a, claiming below b's scope.
    match reg.delegate_scope(
        "a",
        "c",
        me(),
        "/run/c.sock",
        vec![w("/src/core/sub")],
        authority(vec![w("/src")]),
    ) {
        Err(RegistryError::WriteConflict { competitor, .. }) => assert_eq!(competitor, "b"),
        other => panic!("{other:?}"),
    }
    // What a delegated away is no longer its own; the rest is.
    assert!(reg.has_effective("a", &w("/src/other")).unwrap());
    assert!(!reg.has_effective("a", &w("/src/core")).unwrap());
    assert!(reg.has_effective("b", &w("/src/core/deep")).unwrap());
    assert!(
        reg.has_effective("a", &r("/src/core")).unwrap(),
        "reading is not delegated away"
    );
}

#[test]
fn a_parents_deny_lets_a_newcomer_in_but_not_onto_the_parents_whole_scope() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    reg.register_pod(
        "a",
        me(),
        "/run/a.sock",
        vec![w("/src")],
        vec![w("/src/core")],
        sid(),
    )
    .unwrap()
    .keep();
    register(&reg, "n", vec![w("/src/core")]).unwrap();
    match register(&reg, "m", vec![w("/src")]) {
        Err(RegistryError::WriteConflict {
            competitor,
            competitor_rule,
            ..
        }) => {
            assert_eq!((competitor.as_str(), competitor_rule), ("a", w("/src")));
        }
        other => panic!("{other:?}"),
    }
    // A newcomer whose own deny fully covers the owner's rule may overlap it.
    reg.register_pod(
        "o",
        me(),
        "/run/o.sock",
        vec![w("/")],
        vec![w("/src")],
        sid(),
    )
    .unwrap()
    .keep();
}

#[test]
fn delegation_needs_authority_and_an_unknown_spawner_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    register(&reg, "a", vec![r("/")]).unwrap();
    match reg.delegate_scope(
        "a",
        "b",
        me(),
        "/run/b.sock",
        vec![w("/docs")],
        authority(vec![w("/src")]),
    ) {
        Err(RegistryError::NotSubset { rule }) => assert_eq!(rule, w("/docs")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reg.delegate_scope(
            "a",
            "b",
            me(),
            "/run/b.sock",
            vec![w("/src/x")],
            Authority::default()
        ),
        Err(RegistryError::NotSubset { .. })
    ));
    // A read-only orchestrator may delegate a write it was authorised to hand out.
    reg.delegate_scope(
        "a",
        "b",
        me(),
        "/run/b.sock",
        vec![w("/src/x")],
        authority(vec![w("/src")]),
    )
    .unwrap();
    assert!(matches!(
        reg.delegate_scope("ghost", "c", me(), "/run/c.sock", vec![r("/src")], authority(vec![r("/")])),
        Err(RegistryError::UnknownPod(p)) if p == "ghost"
    ));
    assert!(matches!(
        reg.delegate_scope(
            "a",
            "b",
            me(),
            "/run/b.sock",
            vec![r("/src")],
            authority(vec![r("/")])
        ),
        Err(RegistryError::DuplicatePodName(_))
    ));
    let bad = Authority {
        allow: vec![ScopeRule {
            target: "relative".into(),
            permission: Permission::Write,
            recursive: true,
        }],
        deny: vec![],
    };
    assert!(matches!(
        reg.delegate_scope("a", "c", me(), "/run/c.sock", vec![w("/src/y")], bad),
        Err(RegistryError::InvalidScope { .. })
    ));
    assert!(matches!(
        ScopeRule::write("src"),
        Err(RegistryError::InvalidScope { .. })
    ));
}

#[test]
fn pre_reservations_adopt_and_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    let seg_a = sid();
    reg.register_pod("a", me(), "/run/a.sock", vec![w("/p")], vec![], seg_a)
        .unwrap()
        .keep();
    reg.delegate_scope(
        "a",
        "child",
        0,
        "/run/child.sock",
        vec![w("/p/sub")],
        authority(vec![w("/p")]),
    )
    .unwrap();
    let child = reg.find("child").unwrap().unwrap();
    assert_eq!(
        (child.segment_id, child.delegated_from.as_deref()),
        (None, Some("a"))
    );
    let seg_c = sid();
    assert!(
        reg.find_by_segment(seg_c).unwrap().is_none(),
        "a pre-reservation never matches"
    );
    let guard = reg.adopt_allocation("child", me(), seg_c).unwrap();
    assert_eq!(
        reg.find_by_segment(seg_c).unwrap().unwrap().pod_name,
        "child"
    );
    assert_eq!(
        reg.lookup_segment(seg_c).unwrap(),
        Some(("child".into(), "/run/child.sock".into(), me()))
    );
    // A segment collision names the first holder.
    match reg.register_pod("z", me(), "/run/z.sock", vec![r("/")], vec![], seg_a) {
        Err(RegistryError::SegmentConflict { holder, socket, .. }) => {
            assert_eq!((holder.as_str(), socket), ("a", "/run/a.sock".into()));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reg.update_segment("child", seg_a),
        Err(RegistryError::SegmentConflict { .. })
    ));
    let seg_new = sid();
    reg.update_segment("child", seg_new).unwrap();
    assert_eq!(
        reg.find("child").unwrap().unwrap().segment_id,
        Some(seg_new)
    );
    assert!(matches!(
        reg.update_segment("ghost", sid()),
        Err(RegistryError::UnknownPod(_))
    ));
    assert!(matches!(
        reg.adopt_allocation("ghost", me(), sid()),
        Err(RegistryError::UnknownPod(_))
    ));
    // A dropped guard releases its pod.
    drop(guard);
    assert!(reg.find("child").unwrap().is_none());
    assert!(matches!(
        reg.release_pod("child"),
        Err(RegistryError::UnknownPod(_))
    ));
}

#[test]
fn release_and_reclaim_reparent_children_and_free_scope() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    register(&reg, "a", vec![w("/src")]).unwrap();
    reg.delegate_scope(
        "a",
        "b",
        me(),
        "/run/b",
        vec![w("/src/b")],
        authority(vec![w("/src")]),
    )
    .unwrap();
    reg.delegate_scope(
        "b",
        "d",
        me(),
        "/run/d",
        vec![w("/src/b/d")],
        authority(vec![w("/src/b")]),
    )
    .unwrap();
    reg.release_pod("b").unwrap();
    assert_eq!(
        reg.find("d").unwrap().unwrap().delegated_from.as_deref(),
        Some("a")
    );

    // A dead b in a -> b -> d is reclaimed and d ends up under a: b2's
    // process lives while the chain is built, then dies.
    let mut b2 = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    reg.delegate_scope(
        "a",
        "b2",
        b2.id(),
        "/run/b2",
        vec![w("/src/b2")],
        authority(vec![w("/src")]),
    )
    .unwrap();
    reg.delegate_scope(
        "b2",
        "d2",
        me(),
        "/run/d2",
        vec![w("/src/b2/d2")],
        authority(vec![w("/src/b2")]),
    )
    .unwrap();
    b2.kill().unwrap();
    b2.wait().unwrap();
    let dead = dead_pid();
    let before = reg.db().expect("embedded").last_lsn();
    assert_eq!(reg.reclaim_stale().unwrap(), vec!["b2".to_string()]);
    assert_eq!(
        reg.find("d2").unwrap().unwrap().delegated_from.as_deref(),
        Some("a")
    );
    assert!(reg.db().expect("embedded").last_lsn() > before);
    // Nothing dead: nothing written.
    let before = reg.db().expect("embedded").last_lsn();
    assert!(reg.reclaim_stale().unwrap().is_empty());
    assert_eq!(reg.db().expect("embedded").last_lsn(), before);

    // Releasing a pod lets a fresh registration take its scope.
    assert!(register(&reg, "new", vec![w("/src/zzz")]).is_err());
    reg.release_pod("a").unwrap();
    register(&reg, "new", vec![w("/src/zzz")]).unwrap();
    // Registration reclaims stale pods first.
    reg.register_pod(
        "ghost",
        dead,
        "/run/ghost",
        vec![w("/ghost")],
        vec![],
        sid(),
    )
    .unwrap()
    .keep();
    register(&reg, "heir", vec![w("/ghost/x")]).unwrap();
    assert!(reg.find("ghost").unwrap().is_none());
}

#[test]
fn reclaiming_delegated_scope_removes_one_deny_per_rule_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    reg.register_pod(
        "a",
        me(),
        "/run/a",
        vec![w("/src")],
        vec![w("/src/core"), w("/src/core")],
        sid(),
    )
    .unwrap()
    .keep();
    reg.delegate_scope(
        "a",
        "b",
        me(),
        "/run/b",
        vec![w("/src/core")],
        authority(vec![w("/src")]),
    )
    .unwrap();
    reg.reclaim_delegated_scope("a", "b", vec![w("/src/core")])
        .unwrap();
    let a = reg.find("a").unwrap().unwrap();
    assert_eq!(
        a.deny,
        vec![w("/src/core")],
        "at most one equal deny per rule"
    );
    assert!(reg.find("b").unwrap().is_none());
    // The second layer goes with a second call, child or no child.
    reg.reclaim_delegated_scope("a", "b", vec![w("/src/core")])
        .unwrap();
    assert!(reg.find("a").unwrap().unwrap().deny.is_empty());
    // Nothing left to remove: nothing written.
    let before = reg.db().expect("embedded").last_lsn();
    reg.reclaim_delegated_scope("a", "b", vec![w("/src/core")])
        .unwrap();
    reg.reclaim_delegated_scope("gone", "gone-too", vec![w("/x")])
        .unwrap();
    assert_eq!(
        reg.db().expect("embedded").last_lsn(),
        before,
        "nothing to do, nothing written"
    );
    // And the parent writes that scope again.
    assert!(reg.has_effective("a", &w("/src/core")).unwrap());
}

#[test]
fn reclaim_removes_a_child_that_is_not_recorded_under_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    reg.register_pod(
        "parent",
        me(),
        "/run/p",
        vec![w("/src")],
        vec![w("/src/core")],
        sid(),
    )
    .unwrap()
    .keep();
    // A restored child registers top level, inside the parent's deny.
    register(&reg, "child", vec![w("/src/core")]).unwrap();
    assert_eq!(reg.find("child").unwrap().unwrap().delegated_from, None);
    reg.reclaim_delegated_scope("parent", "child", vec![w("/src/core")])
        .unwrap();
    assert!(reg.find("child").unwrap().is_none());
    assert!(reg.find("parent").unwrap().unwrap().deny.is_empty());
}

#[test]
fn a_deny_covering_one_owner_does_not_let_a_registration_past_another() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    register(&reg, "x", vec![w("/src/core")]).unwrap();
    register(&reg, "y", vec![w("/src/other")]).unwrap();
    let refused = reg.register_pod(
        "restored",
        me(),
        "/run/restored",
        vec![w("/src")],
        vec![w("/src/core")],
        sid(),
    );
    match refused {
        Err(RegistryError::WriteConflict {
            competitor,
            competitor_rule,
            ..
        }) => {
            assert_eq!(competitor, "y", "the first owner the deny does not cover");
            assert_eq!(competitor_rule, w("/src/other"));
        }
        other => panic!("expected WriteConflict naming y, got {other:?}"),
    }
    // Covering both owners, it passes.
    reg.register_pod(
        "restored",
        me(),
        "/run/restored",
        vec![w("/src")],
        vec![w("/src/core"), w("/src/other")],
        sid(),
    )
    .unwrap()
    .keep();
}

#[test]
fn read_rules_never_conflict_and_duplicates_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    register(&reg, "w", vec![w("/src")]).unwrap();
    register(&reg, "r1", vec![r("/src")]).unwrap();
    register(&reg, "r2", vec![r("/")]).unwrap();
    assert!(matches!(
        register(&reg, "w", vec![r("/x")]),
        Err(RegistryError::DuplicatePodName(_))
    ));
}

#[test]
fn an_empty_database_is_an_empty_table_and_everything_survives_reopen_with_history() {
    let tmp = tempfile::tempdir().unwrap();
    let table = {
        let reg = open(tmp.path());
        assert!(reg.allocations().unwrap().is_empty());
        register(&reg, "a", vec![w("/src")]).unwrap();
        reg.delegate_scope(
            "a",
            "b",
            0,
            "/run/b",
            vec![w("/src/b")],
            authority(vec![w("/src")]),
        )
        .unwrap();
        reg.adopt_allocation("b", me(), sid()).unwrap().keep();
        reg.db().expect("embedded").checkpoint().unwrap();
        register(&reg, "c", vec![w("/docs")]).unwrap();
        reg.release_pod("c").unwrap();
        reg.allocations().unwrap()
    };
    let reg = open(tmp.path());
    assert_eq!(reg.allocations().unwrap(), table);
    let history = reg.history("b", 1, usize::MAX).unwrap().entries;
    assert_eq!(
        history.iter().map(|h| h.op.as_str()).collect::<Vec<_>>(),
        vec!["delegate_scope", "adopt_allocation"]
    );
    assert!(history.iter().all(|h| h.by_pid == me() && h.at_unix_ms > 0));
    let c = reg.history("c", 1, usize::MAX).unwrap().entries;
    assert!(matches!(
        c.last().map(|h| &h.change),
        Some(Change::Removed {
            reason: RemovalReason::Released,
            ..
        })
    ));
}

#[test]
fn the_cli_lists_shows_tells_history_and_reclaims() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let reg = open(tmp.path());
        register(&reg, "a", vec![w("/src")]).unwrap();
        reg.register_pod(
            "dead",
            dead_pid(),
            "/run/dead",
            vec![w("/dead")],
            vec![],
            sid(),
        )
        .unwrap()
        .keep();
    }
    let out = common::cli(tmp.path(), &["registry", "ls", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["pod_name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, vec!["a", "dead"]);
    let out = common::cli(tmp.path(), &["registry", "show", "a"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["allow"][0]["target"], "/src");
    let out = common::cli(tmp.path(), &["registry", "show", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    let out = common::cli(tmp.path(), &["registry", "history", "a", "--json"]);
    let h: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        (h["op"].as_str(), h["by_pid"].as_u64()),
        (Some("register_pod"), Some(u64::from(me())))
    );
    let out = common::cli(tmp.path(), &["registry", "reclaim"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "dead\n");
    let out = common::cli(tmp.path(), &["registry", "ls"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn review_regressions_idempotence_stale_guards_exemption_adopt_and_chains() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    // Repeated reclaim of delegated scope takes one deny layer a call.
    reg.register_pod(
        "p",
        me(),
        "/run/p",
        vec![w("/src")],
        vec![w("/src/core"), w("/src/core")],
        sid(),
    )
    .unwrap()
    .keep();
    reg.delegate_scope(
        "p",
        "c",
        me(),
        "/run/c",
        vec![w("/src/core")],
        authority(vec![w("/src")]),
    )
    .unwrap();
    reg.reclaim_delegated_scope("p", "c", vec![w("/src/core")])
        .unwrap();
    reg.reclaim_delegated_scope("p", "c", vec![w("/src/core")])
        .unwrap();
    // One deny layer per call, the child gone or not (the original's rule).
    assert!(reg.find("p").unwrap().unwrap().deny.is_empty());
    let before = reg.db().expect("embedded").last_lsn();
    reg.reclaim_delegated_scope("p", "c", vec![w("/src/core")])
        .unwrap();
    assert_eq!(
        reg.db().expect("embedded").last_lsn(),
        before,
        "nothing left: nothing written"
    );

    // A stale guard does not release a newcomer (another process) that
    // took the name.
    let guard = reg
        .register_pod("x", me(), "/run/x", vec![w("/x")], vec![], sid())
        .unwrap();
    reg.release_pod("x").unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    reg.register_pod("x", other.id(), "/run/x2", vec![w("/x2")], vec![], sid())
        .unwrap()
        .keep();
    drop(guard);
    assert_eq!(reg.find("x").unwrap().unwrap().allow, vec![w("/x2")]);
    reg.release_pod("x").unwrap();
    other.kill().unwrap();
    other.wait().unwrap();

    // Adopting a segment another pod holds is a SegmentConflict.
    let held = sid();
    reg.register_pod("holder", me(), "/run/h", vec![r("/")], vec![], held)
        .unwrap()
        .keep();
    reg.delegate_scope(
        "p",
        "kid",
        me(),
        "/run/kid",
        vec![w("/src/kid")],
        authority(vec![w("/src")]),
    )
    .unwrap();
    assert!(matches!(
        reg.adopt_allocation("kid", me(), held),
        Err(RegistryError::SegmentConflict { .. })
    ));

    // The exempt spawner is skipped and the walk goes on to later pods.
    reg.register_pod("s", me(), "/run/s", vec![w("/t")], vec![w("/t/x")], sid())
        .unwrap()
        .keep();
    register(&reg, "t", vec![w("/t/x")]).unwrap();
    match reg.delegate_scope(
        "s",
        "sc",
        me(),
        "/run/sc",
        vec![w("/t")],
        authority(vec![w("/t")]),
    ) {
        Err(RegistryError::WriteConflict { competitor, .. }) => assert_eq!(competitor, "t"),
        other => panic!("{other:?}"),
    }

    // A chain of two dead pods collapses to the nearest live ancestor.
    let mut b = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let mut c = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    reg.delegate_scope(
        "p",
        "b",
        b.id(),
        "/run/b",
        vec![w("/src/b")],
        authority(vec![w("/src")]),
    )
    .unwrap();
    reg.delegate_scope(
        "b",
        "c2",
        c.id(),
        "/run/c2",
        vec![w("/src/b/c")],
        authority(vec![w("/src/b")]),
    )
    .unwrap();
    reg.delegate_scope(
        "c2",
        "d",
        me(),
        "/run/d",
        vec![w("/src/b/c/d")],
        authority(vec![w("/src/b/c")]),
    )
    .unwrap();
    for child in [&mut b, &mut c] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut gone = reg.reclaim_stale().unwrap();
    gone.sort();
    assert_eq!(gone, vec!["b".to_string(), "c2".to_string()]);
    assert_eq!(
        reg.find("d").unwrap().unwrap().delegated_from.as_deref(),
        Some("p")
    );
}

#[test]
fn a_refused_registration_still_writes_the_stale_reclaim_it_did_first() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    register(&reg, "live", vec![w("/live")]).unwrap();
    reg.register_pod(
        "dead",
        dead_pid(),
        "/run/dead",
        vec![w("/dead")],
        vec![],
        sid(),
    )
    .unwrap()
    .keep();
    assert!(matches!(
        register(&reg, "live", vec![w("/other")]),
        Err(RegistryError::DuplicatePodName(_))
    ));
    assert!(
        reg.find("dead").unwrap().is_none(),
        "the reclaim was written"
    );
    assert_eq!(
        reg.history("dead", 1, usize::MAX)
            .unwrap()
            .entries
            .last()
            .map(|h| h.op.as_str()),
        Some("reclaim_stale")
    );
    // Nothing to reclaim: a refusal writes nothing.
    let before = reg.db().expect("embedded").last_lsn();
    assert!(register(&reg, "live", vec![w("/other")]).is_err());
    assert_eq!(reg.db().expect("embedded").last_lsn(), before);
}

#[test]
fn history_is_read_a_page_at_a_time_and_the_pages_make_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = open(tmp.path());
    register(&reg, "a", vec![w("/a")]).unwrap();
    // A pod whose name extends another's: its entries are its own.
    register(&reg, "ab", vec![w("/ab")]).unwrap();
    for _ in 0..24 {
        reg.update_segment("a", sid()).unwrap();
        reg.update_segment("ab", sid()).unwrap();
    }
    let whole = reg.history("a", 1, usize::MAX).unwrap();
    assert_eq!(whole.entries.len(), 25);
    assert_eq!(whole.next, None);
    assert!(whole.entries.windows(2).all(|p| p[0].lsn < p[1].lsn));
    let (mut from, mut paged, mut pages) = (1, Vec::new(), 0);
    loop {
        let page = reg.history("a", from, 7).unwrap();
        assert!(page.entries.len() <= 7);
        pages += 1;
        paged.extend(page.entries);
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(paged, whole.entries);
    assert!(paged.iter().all(|h| h.change.pods() == vec!["a"]));
    // From the middle, and past the end.
    let mid = whole.entries[10].lsn;
    assert_eq!(reg.history("a", mid, 3).unwrap().entries[0].lsn, mid);
    assert!(reg.history("a", u64::MAX, 3).unwrap().entries.is_empty());
    assert!(reg.history("nobody", 1, 3).unwrap().entries.is_empty());
    // The CLI pages the same way and says where to go on.
    drop(reg);
    let out = common::cli(
        tmp.path(),
        &["registry", "history", "a", "--limit", "7", "--json"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 7);
    let next = whole.entries[7].lsn;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("next: --from {next}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
