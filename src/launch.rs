//! Running ipfs-cluster-service, never through a shell: `init` when the peer
//! has no config, then the daemon, either exec'd (same PID, so ECS signals
//! reach it) or supervised as a child (signals forwarded, exit code passed on).

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use tokio::signal::unix::Signal;

use crate::exit::Error;
use crate::peer::Consensus;

/// `<bin> init --consensus C`, with no terminal (it must not prompt), as the
/// official image's entrypoint does when service.json is missing.
pub fn init(bin: &Path, consensus: Consensus, config_dir: &Path) -> Result<(), Error> {
    let derr = |what, detail: String| Error::Daemon {
        bin: bin.display().to_string(),
        what,
        detail,
    };
    std::fs::create_dir_all(config_dir).map_err(|source| Error::Write {
        path: config_dir.to_owned(),
        source,
    })?;
    let out = Command::new(bin)
        .args(["init", "--consensus", consensus.as_str()])
        .env("IPFS_CLUSTER_PATH", config_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| derr("cannot run init", e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(derr("init failed", format!("{}: {tail}", out.status)));
    }
    Ok(())
}

/// Variables set for the daemon on top of the inherited environment
/// (IPFS_CLUSTER_PATH of a slot, IPFS_PATH for kubo).
pub type Env = [(&'static str, OsString)];

/// Replaces this process with the daemon. Returns only on failure.
pub fn exec(argv: &[OsString], env: &Env) -> Error {
    use std::os::unix::process::CommandExt;
    let err = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .exec();
    Error::Daemon {
        bin: argv[0].to_string_lossy().into_owned(),
        what: "cannot exec the daemon",
        detail: err.to_string(),
    }
}

/// Runs the daemon as a child, forwarding SIGTERM, SIGINT and SIGHUP to it,
/// and returns its exit code (128 + signal when a signal ended it). On the
/// first SIGTERM, `before_stop` runs before the signal is forwarded (the
/// scale-in retirement); a second SIGTERM cuts it short.
pub async fn supervise<F, Fut>(
    argv: &[OsString],
    env: &Env,
    before_stop: Option<F>,
    (term, int): (Option<Signal>, Option<Signal>),
) -> Result<i32, Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut before_stop = before_stop;
    use tokio::signal::unix::{signal, SignalKind};
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(env.iter().map(|(k, v)| (k, v)));
    // The daemon never outlives its supervisor (it may hold a slot's lock,
    // which the supervisor's watchdog guards).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::Daemon {
        bin: argv[0].to_string_lossy().into_owned(),
        what: "cannot start the daemon",
        detail: e.to_string(),
    })?;
    let pid = child.id().map(|p| p as libc::pid_t);
    // The caller's SIGTERM and SIGINT streams (a signal that came before the
    // spawn is seen here), else new ones.
    let mut term = term.or_else(|| signal(SignalKind::terminate()).ok());
    let mut int = int.or_else(|| signal(SignalKind::interrupt()).ok());
    let mut hup = signal(SignalKind::hangup()).ok();
    // The slot lock's watchdog fences with SIGUSR1: a SIGTERM for the daemon, now.
    let mut fence = signal(SignalKind::user_defined1()).ok();
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    loop {
        let sig = tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Error::Daemon { bin: argv[0].to_string_lossy().into_owned(), what: "lost the daemon", detail: e.to_string() })?;
                use std::os::unix::process::ExitStatusExt;
                return Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
            }
            _ = recv(&mut term) => {
                if let Some(hook) = before_stop.take() {
                    tokio::select! {
                        _ = hook() => {}
                        _ = recv(&mut term) => tracing::warn!("a second SIGTERM: stopping now"),
                    }
                }
                libc::SIGTERM
            }
            _ = recv(&mut fence) => {
                before_stop = None;
                tracing::warn!("the slot lock's watchdog fences: stopping the daemon now");
                libc::SIGTERM
            }
            _ = recv(&mut int) => libc::SIGINT,
            _ = recv(&mut hup) => libc::SIGHUP,
        };
        if let Some(pid) = pid {
            tracing::info!(signal = sig, pid, "forwarding signal to the daemon");
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}
