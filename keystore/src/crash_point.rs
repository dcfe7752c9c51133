//! Test-only crash points, compiled in with the `test-util` feature (never enable it in
//! production). Without the feature every function here is an empty inline function.
//!
//! With the feature, setting the environment variable `KEYSTORE_CRASH_POINT` to the name
//! of a point makes the process print `CRASH-POINT <name>` on stdout when it gets there and
//! then stop there forever, so a test can `SIGKILL` it exactly at that point
//! (`keystore/tests/crash.rs` does). The points:
//!
//! * `activate:before-write`: [`Keystore::activate_with_state`](crate::Keystore::activate_with_state)
//!   has verified the generation and sealed the pointer and the state, nothing is written;
//! * `activate:torn-write`: its batch (active pointer, then state) has reached the
//!   write-ahead log **except its last byte**: the pointer is in the file, the state
//!   almost, the record is torn;
//! * `activate:after-write`: the batch is written and synced, the store's high-water mark
//!   (`KEYSTORE.VERSIONS`) not yet raised, the call has not returned;
//! * `delete:before-purge`: [`Keystore::delete_key_with_state`](crate::Keystore::delete_key_with_state)
//!   has written its synced batch (deletions and state), the compaction has not started.

#[cfg(feature = "test-util")]
mod imp {
    use std::io::Write;
    use std::sync::Mutex;

    /// The environment variable naming the point to stop at.
    const ENV: &str = "KEYSTORE_CRASH_POINT";

    /// The torn-write point armed for the next write-ahead-log write, if any.
    static TORN_LOG_WRITE: Mutex<Option<&'static str>> = Mutex::new(None);

    fn selected(point: &str) -> bool {
        std::env::var(ENV).is_ok_and(|v| v == point)
    }

    /// Announces `point` on stdout and never returns.
    pub(crate) fn stall(point: &str) -> ! {
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "CRASH-POINT {point}");
            let _ = out.flush();
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }

    /// Stops here if `point` is the selected crash point.
    pub(crate) fn reached(point: &str) {
        if selected(point) {
            stall(point);
        }
    }

    /// If `point` is selected, the next write to a write-ahead log writes all but its
    /// last byte and then stops as `point` (see [`take_torn_log_write`]).
    pub(crate) fn arm_torn_log_write(point: &'static str) {
        if selected(point) {
            *TORN_LOG_WRITE.lock().unwrap_or_else(|e| e.into_inner()) = Some(point);
        }
    }

    /// Disarms [`arm_torn_log_write`].
    pub(crate) fn disarm_torn_log_write() {
        *TORN_LOG_WRITE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The armed torn-write point, disarming it.
    pub(crate) fn take_torn_log_write() -> Option<&'static str> {
        TORN_LOG_WRITE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

#[cfg(not(feature = "test-util"))]
mod imp {
    #[inline(always)]
    pub(crate) fn reached(_point: &str) {}
    #[inline(always)]
    pub(crate) fn arm_torn_log_write(_point: &'static str) {}
    #[inline(always)]
    pub(crate) fn disarm_torn_log_write() {}
}

pub(crate) use imp::*;
