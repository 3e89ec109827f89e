//! A token bucket: the per-connection publish rate limit.

use std::time::{Duration, Instant};

pub(crate) struct TokenBucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket that refills at `per_second`.
    pub(crate) fn new(per_second: u32) -> TokenBucket {
        TokenBucket { tokens: f64::from(per_second), rate: f64::from(per_second), at: Instant::now() }
    }

    /// Takes a token, or says how long until one is there.
    pub(crate) fn take(&mut self) -> Result<(), Duration> {
        self.ready()?;
        self.tokens -= 1.0;
        Ok(())
    }

    /// Whether a token is there (taking none), or how long until one is.
    pub(crate) fn ready(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            // At least 1 ms: a retry-after of 0 reads as "none" on the wire.
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate.max(1e-9)).max(Duration::from_millis(1)))
        }
    }

    /// True when the bucket has refilled completely (nothing to remember about it).
    pub(crate) fn is_full(&self) -> bool {
        self.tokens + self.at.elapsed().as_secs_f64() * self.rate >= self.rate
    }
}
