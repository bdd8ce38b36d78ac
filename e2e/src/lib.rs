//! The end-to-end harness: starts Rustkube's daemons as separate processes with
//! run-unique ports and directories, captures their logs, waits for readiness by
//! polling, and stops exactly the processes it started (by pid), also when a test fails.
//!
//! Must not: link any daemon crate (tests drive the real binaries and real clients), or
//! signal a process it did not start.
