//! Self-fencing for a slot lock. After a network break longer than the NFS
//! lease, Linux loses the lock without telling its holder (I/O on that file
//! then fails) while another task may take the slot. The daemon never touches
//! the lock file, so a watchdog process that shares the lock's descriptor
//! writes and fsyncs through it every `--watchdog-interval` and stops the
//! daemon (SIGTERM, then SIGKILL) when that fails, hangs, or the lock file is
//! no longer the one at its path. It exits as soon as the daemon is gone (its
//! parent changes), so it never holds the lock alone.
//!
//! It runs as `ipfs-cluster-bootstrap __watchdog FD PID PATH INTERVAL_MS`,
//! started by [`spawn`] just before the exec that turns this process into the
//! daemon.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::exit::Error;
use crate::slot::Lock;

/// The hidden argv[1] that runs [`main`].
pub const ARG: &str = "__watchdog";

/// How the watchdog stops the guarded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// SIGTERM: the process becomes the daemon (exec).
    Term,
    /// SIGUSR1: the process supervises the daemon and passes it a SIGTERM at
    /// once, without what it does on a SIGTERM from ECS (scale-in retirement
    /// on the very storage that failed).
    Usr1,
}

/// Starts the watchdog for `lock`, to guard this process (which will become
/// the daemon, or supervise it), as soon as the lock is taken.
pub fn spawn(lock: &Lock, interval: Duration, fence: Fence) -> Result<(), Error> {
    let err = |detail: String| Error::Daemon {
        bin: "ipfs-cluster-bootstrap __watchdog".into(),
        what: "cannot start the slot lock's watchdog",
        detail,
    };
    // The watchdog gets the descriptor; nothing else this process spawns
    // (`init`) does, until the exec that makes it the daemon's.
    lock.set_inherited(true).map_err(|e| err(e.to_string()))?;
    // This very binary, even if its file was replaced since it started.
    let spawned = Command::new("/proc/self/exe")
        .arg(ARG)
        .arg(lock.fd().to_string())
        .arg(std::process::id().to_string())
        .arg(lock.path())
        .arg(interval.as_millis().to_string())
        .arg(match fence {
            Fence::Term => "term",
            Fence::Usr1 => "usr1",
        })
        .stdin(Stdio::null())
        .spawn();
    lock.set_inherited(false).map_err(|e| err(e.to_string()))?;
    spawned.map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Why the watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guarded process is gone: nothing to do.
    ParentGone,
    /// The lock can no longer be trusted: stop the guarded process.
    Fence(String),
}

/// The watch loop, with its I/O passed in: `check` once per `interval` on a
/// thread of its own (it may hang on a dead NFS server) and answering within
/// `timeout`; `parent_alive` once per `tick`.
pub fn watch(
    mut check: impl FnMut() -> io::Result<()> + Send + 'static,
    mut parent_alive: impl FnMut() -> bool,
    interval: Duration,
    timeout: Duration,
    tick: Duration,
) -> Outcome {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<io::Result<()>>();
    std::thread::spawn(move || {
        while go_rx.recv().is_ok() {
            if done_tx.send(check()).is_err() {
                return;
            }
        }
    });
    let mut next = Instant::now();
    loop {
        if !parent_alive() {
            return Outcome::ParentGone;
        }
        if Instant::now() >= next {
            if go_tx.send(()).is_err() {
                return Outcome::Fence("the lock check stopped".into());
            }
            let deadline = Instant::now() + timeout;
            loop {
                match done_rx.recv_timeout(tick.min(deadline.saturating_duration_since(Instant::now()))) {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => return Outcome::Fence(e.to_string()),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Outcome::Fence("the lock check stopped".into())
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if !parent_alive() {
                            return Outcome::ParentGone;
                        }
                        if Instant::now() >= deadline {
                            return Outcome::Fence(format!(
                                "writing through the lock did not finish within {}",
                                humantime::format_duration(timeout)
                            ));
                        }
                    }
                }
            }
            next = Instant::now() + interval;
        }
        std::thread::sleep(tick);
    }
}

/// Writes a heartbeat through the lock's descriptor and fsyncs it, and checks
/// that the file at `path` is still the one locked.
pub fn check_lock(fd: i32, path: &Path) -> io::Result<()> {
    let line = format!(
        "{:<40}\n",
        format!(
            "held {}",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        )
    );
    let n = unsafe { libc::pwrite(fd, line.as_ptr().cast(), line.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if unsafe { libc::fsync(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let at_path = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => io::Error::other("the lock file was removed"),
        _ => e,
    })?;
    if at_path.dev() != st.st_dev || at_path.ino() != st.st_ino {
        return Err(io::Error::other("the lock file was replaced by another file"));
    }
    Ok(())
}

/// `__watchdog FD PID PATH INTERVAL_MS term|usr1`: watch, fence, exit.
pub fn main(args: &[String]) -> i32 {
    let parsed = (|| {
        let [fd, pid, path, interval, fence] = args else {
            return None;
        };
        Some((
            fd.parse::<i32>().ok()?,
            pid.parse::<i32>().ok()?,
            PathBuf::from(path),
            Duration::from_millis(interval.parse::<u64>().ok()?),
            match fence.as_str() {
                "term" => libc::SIGTERM,
                "usr1" => libc::SIGUSR1,
                _ => return None,
            },
        ))
    })();
    let Some((fd, parent, path, interval, fence)) = parsed else {
        eprintln!("ipfs-cluster-bootstrap {ARG}: internal use only (FD PID PATH INTERVAL_MS term|usr1)");
        return crate::exit::code::USAGE;
    };
    let parent_alive = move || unsafe { libc::getppid() } == parent;
    let lock_path = path.clone();
    let outcome = watch(
        move || check_lock(fd, &lock_path),
        parent_alive,
        interval,
        interval.max(Duration::from_secs(1)),
        Duration::from_millis(250),
    );
    let Outcome::Fence(why) = outcome else { return 0 };
    eprintln!(
        "ipfs-cluster-bootstrap watchdog: the lock on {} can no longer be trusted ({why}): stopping pid {parent} so \
         that no two tasks use this slot",
        path.display()
    );
    unsafe { libc::kill(parent, fence) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while parent_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if parent_alive() {
        unsafe { libc::kill(parent, libc::SIGKILL) };
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_failing_write_fences() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let out = watch(
            move || match c.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Ok(()),
                _ => Err(io::Error::from_raw_os_error(libc::EIO)),
            },
            || true,
            5 * MS,
            100 * MS,
            MS,
        );
        assert!(
            matches!(&out, Outcome::Fence(why) if why.contains("Input/output error")),
            "{out:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_hanging_write_fences_after_the_timeout() {
        let started = Instant::now();
        let out = watch(
            || {
                std::thread::sleep(Duration::from_secs(5));
                Ok(())
            },
            || true,
            5 * MS,
            50 * MS,
            MS,
        );
        assert!(
            matches!(&out, Outcome::Fence(why) if why.contains("did not finish")),
            "{out:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn the_watch_ends_with_the_parent() {
        let mut left = 5;
        let out = watch(
            || Ok(()),
            move || {
                left -= 1;
                left > 0
            },
            MS,
            100 * MS,
            MS,
        );
        assert_eq!(out, Outcome::ParentGone);
    }

    #[test]
    fn the_check_writes_through_the_lock_and_notices_a_removed_file() {
        let dir = std::env::temp_dir().join(format!("icb-wd-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("slot.lock");
        let lock = Lock::try_take(&p).unwrap().unwrap();
        check_lock(lock.fd(), &p).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().starts_with("held 20"));
        std::fs::remove_file(&p).unwrap();
        assert!(check_lock(lock.fd(), &p).unwrap_err().to_string().contains("removed"));
        std::fs::write(&p, "").unwrap();
        assert!(check_lock(lock.fd(), &p).unwrap_err().to_string().contains("replaced"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
