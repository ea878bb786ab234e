//! Publish rate limits: one token bucket per key that has a rate.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::ApiKey;
use crate::error::{ApiError, ErrorCode};

/// Token buckets of the keys that have a publish rate.
#[derive(Default)]
pub(crate) struct RateLimits {
    /// A std mutex: one map lookup and a little arithmetic per publish.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimits {
    /// Takes `count` publishes from `key`'s bucket (all or none), or says how long until
    /// they are there.
    pub(crate) fn take(&self, key: &ApiKey, count: u32) -> Result<(), ApiError> {
        let Some(rate) = key.rate else {
            return Ok(());
        };
        let count = f64::from(count);
        if count > rate.burst {
            // No wait makes room for more than the burst at once.
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "key {:?} may publish at most {} events at once (its burst); this asked for {count}",
                    key.name, rate.burst
                ),
            ));
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (tokens, at) = buckets.entry(key.name.clone()).or_insert((rate.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * rate.per_second).min(rate.burst);
        *at = now;
        if *tokens >= count {
            *tokens -= count;
            return Ok(());
        }
        // Rates are bounded when the keys are read; a wait too long for a Duration is
        // still no reason to panic.
        let wait = Duration::try_from_secs_f64((count - *tokens) / rate.per_second)
            .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
        let seconds = wait.as_secs() as u32 + u32::from(wait.subsec_nanos() > 0);
        Err(ApiError {
            retry_after: Some(seconds.max(1)),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "key {:?} may publish {} times per second (burst {}); try again in {} ms",
                    key.name,
                    rate.per_second,
                    rate.burst,
                    wait.as_millis().max(1)
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Rate;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_retry() {
        let mut key = ApiKey::full("limited".into(), "s");
        key.rate = Some(Rate {
            per_second: 0.5,
            burst: 2.0,
        });
        let limits = RateLimits::default();
        assert!(limits.take(&key, 1).is_ok());
        assert!(limits.take(&key, 1).is_ok());
        let refused = limits.take(&key, 1).unwrap_err();
        assert_eq!(
            (refused.status().as_u16(), refused.code),
            (429, ErrorCode::RateLimited)
        );
        assert_eq!(refused.retry_after, Some(2));
        // Three at once: more than the burst ever holds.
        let beyond = limits.take(&key, 3).unwrap_err();
        assert_eq!(beyond.code, ErrorCode::RateLimited);
        assert!(
            beyond.message.contains("at most 2 events at once"),
            "{}",
            beyond.message
        );
        assert!(
            limits.take(&ApiKey::full("free".into(), "t"), 1).is_ok(),
            "no rate, no limit"
        );
    }
}
