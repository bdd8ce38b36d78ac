//! The harness starts processes and leaves nothing running: not after `stop`, not when
//! the owner panics, not the children a process forked.

use e2e::process::{Process, Spec};
use e2e::wait::wait_for;
use e2e::RunDir;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// The state letter of a live process (field 3 of /proc/<pid>/stat), None if it is gone or
/// a zombie.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let c = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    (c != 'Z').then_some(c)
}

fn alive(pid: i32) -> bool {
    state(pid).is_some()
}

/// Pids of every live process whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] = state (field 3), f[2] = pgrp (field 5).
        if f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

fn sh(run: &RunDir, name: &str, script: &str) -> Spec {
    Spec::new(name, "/bin/sh", run.log_file(name)).args(["-c", script])
}

fn poll() -> Duration {
    Duration::from_millis(10)
}

#[test]
fn stop_leaves_nothing_running_including_forked_children() {
    let run = RunDir::temp("harness-stop").unwrap();
    // The shell forks a sleeper of its own and ignores SIGTERM, so only the escalation to
    // SIGKILL after the grace period ends it.
    let mut p = Process::start(sh(
        &run,
        "forker",
        "trap '' TERM; sleep 1000 & echo child=$!; wait",
    ))
    .unwrap();
    let pgid = p.pid();
    wait_for("the forked child", Duration::from_secs(10), poll(), || {
        Ok((group_members(pgid).len() >= 2).then_some(()))
    })
    .unwrap();
    wait_for("the log line", Duration::from_secs(10), poll(), || {
        Ok(std::fs::read_to_string(p.log_path())?
            .contains("child=")
            .then_some(()))
    })
    .unwrap();

    p.stop_with(Duration::from_millis(300)).unwrap();
    assert!(!p.is_running());
    wait_for(
        "the group to be empty",
        Duration::from_secs(5),
        poll(),
        || Ok(group_members(pgid).is_empty().then_some(())),
    )
    .unwrap();
    assert!(!alive(pgid));
}

#[test]
fn graceful_stop_reports_the_exit() {
    let run = RunDir::temp("harness-term").unwrap();
    let mut p = Process::start(sh(&run, "sleeper", "exec sleep 1000")).unwrap();
    assert!(p.is_running());
    let status = p.stop().unwrap().expect("an exit status");
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert!(!alive(p.pid()));
}

#[test]
fn drop_during_a_panic_stops_the_process() {
    let run = RunDir::temp("harness-panic").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let p = Process::start(sh(&run, "doomed", "exec sleep 1000")).unwrap();
        tx.send(p.pid()).unwrap();
        panic!("the test failed");
    }));
    assert!(result.is_err());
    let pid = rx.recv().unwrap();
    assert!(!alive(pid), "pid {pid} survived its owner's panic");
    assert!(group_members(pid).is_empty());
}

#[test]
fn kill_pause_resume_restart() {
    let run = RunDir::temp("harness-signals").unwrap();
    let mut p = Process::start(sh(&run, "worker", "exec sleep 1000")).unwrap();
    let first = p.pid();

    p.pause().unwrap();
    wait_for("the stopped state", Duration::from_secs(5), poll(), || {
        Ok((state(first) == Some('T')).then_some(()))
    })
    .unwrap();
    p.resume().unwrap();
    wait_for("running again", Duration::from_secs(5), poll(), || {
        Ok(matches!(state(first), Some('S' | 'R')).then_some(()))
    })
    .unwrap();

    p.kill().unwrap();
    assert!(!alive(first));
    assert_eq!(p.exit_status().and_then(|s| s.signal()), Some(9));

    p.restart().unwrap();
    assert_ne!(p.pid(), first);
    assert!(p.is_running());
    let second = p.pid();
    drop(p);
    assert!(!alive(second));
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let run = RunDir::temp("harness-missing").unwrap();
    let err = Process::start(Spec::new(
        "ghost",
        "/nonexistent/ghost",
        run.log_file("ghost"),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn run_dirs_are_unique_and_removed() {
    let a = RunDir::temp("unique").unwrap();
    let b = RunDir::temp("unique").unwrap();
    assert_ne!(a.path(), b.path());
    assert!(a.logs().is_dir());
    let path = a.path().to_path_buf();
    drop(a);
    if std::env::var_os("RUSTKUBE_KEEP_RUNS").is_none() {
        assert!(!path.exists());
    }
}
