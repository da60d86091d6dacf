//! Crash points for the tests that kill the operator in the middle of an
//! action: `REPRISE_TEST_CRASH_AT=<point>` makes the operator die at that
//! point the way a deleted pod dies (SIGKILL, its children with it). Unset —
//! as always outside those tests — a crash point does nothing.

use std::sync::OnceLock;

fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| std::env::var("REPRISE_TEST_CRASH_AT").ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Dies here if the tests asked for it.
pub fn point(name: &str) {
    if armed() != Some(name) {
        return;
    }
    tracing::warn!(point = name, "test crash point reached: dying with SIGKILL");
    // SAFETY: plain system calls; nothing runs after them.
    unsafe {
        // The whole process group when the operator leads one (children
        // included, as when a pod dies), else the process alone (its tools
        // die with it: they carry PR_SET_PDEATHSIG).
        if libc::getpgrp() == libc::getpid() {
            libc::kill(0, libc::SIGKILL);
        }
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort();
}
