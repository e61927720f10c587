//! The background loop of a mount: commits after the quiet period, snapshots made elsewhere
//! looked for, and a writer session held while changes are pending.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use puce_core::writer_session::WriterSession;

use super::PuceFs;
use crate::space::Space;

impl PuceFs {
    /// The background loop: commits after the quiet period, follows new snapshots. Returns
    /// when [`PuceFs::shutdown`] is called.
    pub fn run_background(&self) {
        let mut last_poll = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let wait = self.next_wait();
            {
                let (m, cv) = &self.wake;
                if let Ok(mut g) = m.lock() {
                    if !*g {
                        g = match cv.wait_timeout(g, wait) {
                            Ok((g, _)) => g,
                            Err(_) => return,
                        };
                    }
                    *g = false;
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            if last_poll.elapsed() >= self.cfg.poll_interval {
                last_poll = Instant::now();
                if let Err(e) = self.refresh_snapshots() {
                    tracing::warn!("cannot list snapshots: {e:#}");
                }
            }
            let due: Vec<Arc<Space>> = match self.spaces.read() {
                Ok(m) => m.values().filter(|s| self.due(s)).cloned().collect(),
                Err(_) => return,
            };
            for s in due {
                if let Err(e) = self.commit(&s) {
                    tracing::error!(
                        "cannot commit the changes of space '{}' (they stay in the write-back \
                         area; retrying in 30 s): {e:#}",
                        s.name
                    );
                    if let Ok(mut st) = s.st.lock() {
                        st.retry_at = Some(Instant::now() + Duration::from_secs(30));
                    }
                }
            }
            self.hold_session_while_pending();
        }
    }

    /// Hold a writer session while some space has uncommitted changes, and none while every
    /// change is committed: gc then waits for changes about to be committed (the data they
    /// reuse stays), and never for an idle mount. Checked at each turn of the background loop;
    /// the commit itself registers its own session and checks what it reuses
    /// (`keep_reachable`), which covers the moments before this one is taken.
    fn hold_session_while_pending(&self) {
        let pending = self.has_pending();
        let Ok(mut held) = self.pending_session.lock() else {
            return;
        };
        if pending && held.is_none() {
            let what = format!(
                "mount {} (uncommitted changes)",
                self.cfg.mountpoint.display()
            );
            match WriterSession::begin(&self.repo, &what) {
                Ok(s) => *held = Some(s),
                Err(e) => tracing::warn!("cannot register a writer session: {e:#}"),
            }
        } else if !pending
            && let Some(s) = held.take()
            && let Err(e) = s.end(&self.repo)
        {
            tracing::warn!("cannot unregister a writer session: {e:#}");
        }
    }

    fn due(&self, s: &Space) -> bool {
        let Ok(st) = s.st.lock() else { return false };
        st.dirty
            && st.want_commit
            && st.retry_at.is_none_or(|t| Instant::now() >= t)
            && s.quiet_for() >= self.cfg.commit_delay
    }

    fn next_wait(&self) -> Duration {
        let mut wait = self.cfg.poll_interval;
        if let Ok(m) = self.spaces.read() {
            for s in m.values() {
                if let Ok(st) = s.st.lock()
                    && st.dirty
                    && st.want_commit
                {
                    let left = self.cfg.commit_delay.saturating_sub(s.quiet_for());
                    wait = wait.min(left.max(Duration::from_millis(20)));
                }
            }
        }
        wait
    }
}
