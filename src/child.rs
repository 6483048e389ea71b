//! Child processes that end with ringmaster, even when it is killed: the
//! demo's memcached and the replicas the local scaler starts. Linux sends
//! them SIGTERM when the thread that started them ends (PR_SET_PDEATHSIG), so
//! they are started from threads that live as long as the process: the main
//! thread or a runtime worker, never a blocking-pool thread.

use std::os::unix::process::CommandExt as _;

/// Makes `c`'s process get SIGTERM when ringmaster ends, and refuse to start
/// if ringmaster is already gone. Set after any user switch, which clears it.
pub fn dies_with_us(c: &mut std::process::Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("ringmaster is gone"));
            }
            Ok(())
        });
    }
}

/// Sends SIGTERM to `child`, waits up to `grace` for it, then kills it.
pub fn stop(child: &mut std::process::Child, grace: std::time::Duration) {
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let until = std::time::Instant::now() + grace;
    while std::time::Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
