//! In-process token buckets, keyed by string (a user name, a client address).
//!
//! Each gateway keeps its own buckets, so N gateways allow N times the rate; the limit
//! still turns an online password search from millions of guesses a day into thousands.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Above this many keys, full buckets are dropped (they carry no information).
const MAX_KEYS: usize = 10_000;

impl RateLimiter {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > MAX_KEYS {
            let (burst, per_sec) = (self.burst, self.per_sec);
            map.retain(|_, b| refill(*b, now, burst, per_sec).tokens < burst);
        }
        let b = refill(
            *map.get(key).unwrap_or(&Bucket {
                tokens: self.burst,
                at: now,
            }),
            now,
            self.burst,
            self.per_sec,
        );
        if b.tokens < 1.0 {
            map.insert(key.to_string(), b);
            return Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec));
        }
        map.insert(
            key.to_string(),
            Bucket {
                tokens: b.tokens - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// Gives back a token taken by [`take`](Self::take) (the attempt succeeded).
    pub fn give_back(&self, key: &str) {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get_mut(key) {
            b.tokens = (b.tokens + 1.0).min(self.burst);
        }
    }
}

fn refill(b: Bucket, now: Instant, burst: f64, per_sec: f64) -> Bucket {
    let gained = now.saturating_duration_since(b.at).as_secs_f64() * per_sec;
    Bucket {
        tokens: (b.tokens + gained).min(burst),
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_then_refunded() {
        let l = RateLimiter::new(3, 1);
        for _ in 0..3 {
            l.take("a").unwrap();
        }
        let wait = l.take("a").unwrap_err();
        assert!(wait > Duration::from_secs(50), "{wait:?}");
        assert!(l.take("b").is_ok(), "keys are independent");
        l.give_back("a");
        assert!(l.take("a").is_ok());
    }
}
