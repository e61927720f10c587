//! Bandwidth cap: a token bucket shared by every transfer of the process, one per direction.
//!
//! Callers take `n` bytes before sending (or after receiving) them. The bucket holds at most
//! a tenth of a second of traffic, so bursts stay short; a request larger than what the bucket
//! holds is granted at once and repaid by waiting, so the long-run rate is exactly the cap.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A rate limiter; `None` rate: no limit.
#[derive(Debug)]
pub struct Limiter {
    rate: Option<u64>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Available bytes; negative: debt being repaid.
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// A limiter of `rate` bytes per second (`None`: unlimited).
    pub fn new(rate: Option<u64>) -> Limiter {
        Limiter {
            rate,
            state: Mutex::new(State {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// The rate, bytes per second.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Take `n` bytes, waiting as long as the cap requires.
    pub async fn take(&self, n: u64) {
        let Some(rate) = self.rate else {
            return;
        };
        let wait = {
            let Ok(mut s) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            let burst = (rate as f64 / 10.0).max(16384.0);
            let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
            s.tokens = (s.tokens + elapsed * rate as f64).min(burst);
            s.last = now;
            s.tokens -= n as f64;
            if s.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.tokens / rate as f64)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The long-run rate equals the cap (tokio's paused clock: no real waiting, no timing
    /// assertion on this machine's speed).
    #[tokio::test(start_paused = true)]
    async fn long_run_rate_is_the_cap() {
        let l = Limiter::new(Some(1 << 20));
        let start = Instant::now();
        for _ in 0..100 {
            l.take(256 << 10).await; // 25 MiB in 256 KiB pieces
        }
        let secs = start.elapsed().as_secs_f64();
        // 25 MiB at 1 MiB/s: 25 s, less the initial burst allowance (0.1 s).
        assert!((24.8..=25.1).contains(&secs), "{secs}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let l = Limiter::new(None);
        let start = Instant::now();
        l.take(u64::MAX).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
