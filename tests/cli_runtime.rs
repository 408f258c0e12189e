//! `replaydb runtime` drives every runtime operation from a shell: output
//! on stdout (text or JSON lines), the next page's flag and every refusal
//! on stderr, exit 1 for a refusal and 2 for a usage error.

mod common;

use common::cli;

fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let out = cli(dir, args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_runtime_driven_from_the_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let id = ok(dir, &["runtime", "create", "--max-event-batch", "3"]);
    let id = id.trim();
    assert!(id.starts_with("runtime-"), "{id}");
    let w = ok(
        dir,
        &[
            "runtime",
            "worker",
            "create",
            id,
            "--task",
            "docs",
            "--capability",
            "read",
        ],
    );
    assert_eq!(w.trim(), "worker-00000001");
    assert_eq!(
        ok(
            dir,
            &["runtime", "worker", "send", id, "worker-00000001", "hello"]
        ),
        "1\t3\n",
        "sequence and event id"
    );

    let out = cli(dir, &["runtime", "events", id]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        3,
        "the runtime's limit is the default page"
    );
    assert!(
        text.lines()
            .nth(2)
            .unwrap()
            .contains("worker_input_accepted")
    );
    assert!(String::from_utf8(out.stderr).unwrap().is_empty(), "no more");

    let out = cli(dir, &["runtime", "events", id, "--limit", "2", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["kind"]["kind"], "worker_created");
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "next: --from 3\n");

    let out = cli(dir, &["runtime", "events", id, "--limit", "4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exceeds maximum 3"),
        "{out:?}"
    );

    let t = ok(
        dir,
        &["runtime", "transcript", id, "worker-00000001", "--json"],
    );
    let e: serde_json::Value = serde_json::from_str(t.trim()).unwrap();
    assert_eq!(e["content"], "hello");
    assert_eq!(e["role"], "user");

    assert!(ok(dir, &["runtime", "ls"]).contains("workers 1 (active 1"));
    assert_eq!(
        ok(dir, &["runtime", "worker", "cancel", id, "worker-00000001"]),
        "Cancelled\t4\n"
    );
    let out = cli(
        dir,
        &["runtime", "worker", "send", id, "worker-00000001", "late"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("not running")
    );
    assert_eq!(ok(dir, &["runtime", "stop", id]), "5\n");
    assert_eq!(ok(dir, &["runtime", "stop", id]), "5\n", "stopping twice");
    let show: serde_json::Value = serde_json::from_str(&ok(dir, &["runtime", "show", id])).unwrap();
    assert_eq!(show["status"], "stopped");
    assert_eq!(show["cancelled_worker_count"], 1);
}

#[test]
fn refusals_and_usage_errors_exit_nonzero_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = cli(dir, &["runtime", "show", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("runtime nope was not found")
    );
    let out = cli(dir, &["runtime", "create", "--id", "  "]);
    assert_eq!(out.status.code(), Some(2));
    ok(dir, &["runtime", "create", "--id", "rt"]);
    let out = cli(
        dir,
        &["runtime", "worker", "create", "rt", "--profile", "nonsense"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = cli(dir, &["runtime", "worker", "create", "rt", "--task", " "]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("objective"));
    let out = cli(
        dir,
        &[
            "runtime",
            "worker",
            "create",
            "rt",
            "--request",
            "{not json",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = cli(dir, &["runtime", "worker", "send", "rt", "--stdin"]);
    assert!(out.status.success(), "empty stdin sends nothing: {out:?}");
    let out = cli(dir, &["runtime", "worker", "send", "rt"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a worker and content, or --stdin"
    );
}

#[test]
fn send_stdin_refuses_a_line_longer_than_a_record_without_reading_it_whole() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["runtime", "create", "--id", "rt"]);
    ok(dir, &["runtime", "worker", "create", "rt"]);
    let mut child = Command::new(common::bin())
        .arg("--db")
        .arg(dir)
        .args(["runtime", "worker", "send", "rt", "--stdin"])
        .env_remove("REPLAYDB_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(b"worker-00000001\tfirst\n");
        // One byte over the default record limit (16 MiB), then more.
        let long = vec![b'x'; (16 << 20) + 1];
        let _ = stdin.write_all(b"worker-00000001\t");
        let _ = stdin.write_all(&long);
        let _ = stdin.write_all(b"\nworker-00000001\tnever\n");
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "3\n",
        "the first line acknowledged"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stdin line 2: longer than"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = ok(dir, &["runtime", "transcript", "rt", "worker-00000001"]);
    assert_eq!(t.lines().count(), 1, "nothing after the refused line");
}
