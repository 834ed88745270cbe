//! Signals while the sidecar runs (before the daemon has its own), and the
//! retry loop that a signal cuts short.

use std::time::{Duration, Instant};

use tracing::warn;

use crate::rounds::Backoff;

/// SIGTERM/SIGINT while the sidecar itself still runs.
pub(super) struct Stop {
    pub(super) term: Option<tokio::signal::unix::Signal>,
    pub(super) int: Option<tokio::signal::unix::Signal>,
}

impl Stop {
    pub(super) fn new() -> Stop {
        use tokio::signal::unix::{signal, SignalKind};
        Stop {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }
    /// Some(signal) when one has arrived and not been seen yet; never waits.
    pub(super) fn pending(&mut self) -> Option<i32> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for (s, sig) in [(&mut self.term, libc::SIGTERM), (&mut self.int, libc::SIGINT)] {
            if s.as_mut().is_some_and(|s| s.poll_recv(&mut cx).is_ready()) {
                return Some(sig);
            }
        }
        None
    }

    /// Sleeps; Some(signal) when one arrived first.
    pub(super) async fn sleep(&mut self, d: Duration) -> Option<i32> {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => None,
            _ = recv(&mut self.term) => Some(libc::SIGTERM),
            _ = recv(&mut self.int) => Some(libc::SIGINT),
        }
    }
}

/// `f` until it succeeds, with jittered backoff, while the next attempt
/// would start before `deadline`: Ok(its last result), or Err(the signal)
/// that cut the wait.
pub(super) async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    deadline: Instant,
    stop: &mut Stop,
    mut f: impl FnMut() -> F,
) -> Result<Result<T, E>, i32> {
    let mut backoff = Backoff::new(Duration::from_secs(4), fastrand::Rng::new());
    loop {
        match f().await {
            Ok(v) => return Ok(Ok(v)),
            Err(e) => {
                let wait = backoff.step();
                if Instant::now() + wait >= deadline {
                    return Ok(Err(e));
                }
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                if let Some(sig) = stop.sleep(wait).await {
                    return Err(sig);
                }
            }
        }
    }
}

/// A [`retry`]'s outcome as a run's error: the last failure, or the signal.
pub(super) fn or_interrupted<T, E: Into<crate::exit::Error>>(
    outcome: Result<Result<T, E>, i32>,
) -> Result<T, crate::exit::Error> {
    match outcome {
        Ok(result) => result.map_err(Into::into),
        Err(signal) => Err(crate::exit::Error::Interrupted { signal }),
    }
}

#[cfg(test)]
mod tests {
    use super::Stop;

    /// A signal that arrives while the sidecar is busy (writing files after
    /// its decision) is still seen before the daemon is launched.
    #[tokio::test]
    async fn a_signal_that_came_while_busy_is_seen_before_launching() {
        let mut stop = Stop::new();
        assert_eq!(stop.pending(), None);
        unsafe {
            libc::raise(libc::SIGINT);
        }
        let mut seen = None;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            seen = stop.pending();
            if seen.is_some() {
                break;
            }
        }
        assert_eq!(seen, Some(libc::SIGINT));
        assert_eq!(stop.pending(), None, "seen once");
    }
}
