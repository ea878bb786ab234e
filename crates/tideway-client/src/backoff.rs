//! When to try again: full-jitter exponential backoff, `Retry-After`, and a
//! subscription's reconnect rules (docs/clients.md, the same in every Tideway client).
//! Nothing here sleeps: the waits are values, so the rules are tested without a clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wait before try number `attempt` (0 for the first retry): `random` (in [0, 1))
/// times `min(cap, base * 2^attempt)`, so clients cut off together come back spread out.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, random: f64) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.min(30)).min(cap);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

/// The wait a `Retry-After` value asks for — seconds, or an HTTP date (IMF-fixdate) — at
/// most `cap`; `None` if it says neither.
pub fn retry_after(value: &str, cap: Duration, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let when = UNIX_EPOCH + Duration::from_secs(http_date(value)?);
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(cap))
}

/// Seconds since the epoch of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split(' ').collect();
    let [weekday, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    if weekday.len() != 4 || !weekday.ends_with(',') || day.len() != 2 || year.len() != 4 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let number = |s: &str| -> Option<u64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (day, year) = (number(day)?, number(year)?);
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    let (h, m, s) = (number(h)?, number(m)?, number(s)?);
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), March-based years.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// A number in [0, 1) from the OS-seeded hasher and the clock: enough to spread retries.
pub(crate) fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What to do after the gateway refused a connect.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Fetch a new token and try again at once.
    NewToken,
    /// Wait (what the gateway asked, if it did) and try again.
    Retry(Option<Duration>),
    /// Give up: the refusal is final.
    Final,
}

/// A subscription's reconnect state between streams.
#[derive(Debug)]
pub(crate) struct Reconnect {
    attempt: u32,
    base: Duration,
    cap: Duration,
    has_provider: bool,
    refused_tokens: u32,
    /// A token is to be fetched before the next connect.
    pub(crate) need_token: bool,
}

impl Reconnect {
    pub(crate) fn new(base: Duration, cap: Duration, has_provider: bool) -> Self {
        Self {
            attempt: 0,
            base,
            cap,
            has_provider,
            refused_tokens: 0,
            need_token: has_provider,
        }
    }

    /// The wait before the next connect: what the gateway asked, or the next backoff.
    pub(crate) fn wait(&mut self, asked: Option<Duration>, random: f64) -> Duration {
        asked.unwrap_or_else(|| {
            let delay = backoff_delay(self.attempt, self.base, self.cap, random);
            self.attempt = self.attempt.saturating_add(1);
            delay
        })
    }

    /// A stream opened: the next drop starts the backoff afresh.
    pub(crate) fn opened(&mut self) {
        self.attempt = 0;
        self.refused_tokens = 0;
    }

    /// The gateway's `retry:` hint becomes the backoff's base.
    pub(crate) fn retry_hint(&mut self, millis: u64) {
        self.base = Duration::from_millis(millis);
    }

    /// The gateway revoked the token (`tideway.revoked`).
    pub(crate) fn revoked(&mut self) {
        self.need_token = self.has_provider;
    }

    /// The gateway refused a connect with `status`.
    pub(crate) fn refused(&mut self, status: u16, asked: Option<Duration>) -> Refusal {
        if status == 401 && self.has_provider {
            self.refused_tokens += 1;
            if self.refused_tokens == 1 {
                self.need_token = true;
                return Refusal::NewToken;
            }
        }
        if status == 408 || status == 429 || status >= 500 {
            Refusal::Retry(asked)
        } else {
            Refusal::Final
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_stays_below_its_ceiling_from_zero_up() {
        assert_eq!(backoff_delay(0, S(1), S(30), 0.0), Duration::ZERO);
        assert_eq!(backoff_delay(3, S(1), S(30), 0.5), S(4));
        assert_eq!(backoff_delay(500, S(1), S(30), 0.5), S(15));
        let delays: std::collections::HashSet<Duration> = (0..1000)
            .map(|_| backoff_delay(0, S(2), S(30), random_fraction()))
            .collect();
        assert!(delays.iter().all(|d| *d < S(2)));
        assert!(delays.len() > 500, "only {} distinct delays", delays.len());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = UNIX_EPOCH + S(4);
        assert_eq!(retry_after("2", S(60), now), Some(S(2)));
        assert_eq!(retry_after("3600", S(60), now), Some(S(60)));
        assert_eq!(
            retry_after("Thu, 01 Jan 1970 00:00:10 GMT", S(60), now),
            Some(S(6))
        );
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        for bad in ["soon", "", "-1", "Sun, 06 Nov 1994 08:49:37 PST", "1.5"] {
            assert_eq!(retry_after(bad, S(60), now), None, "{bad:?}");
        }
    }

    #[test]
    fn reconnects_back_off_reset_when_open_and_follow_the_gateways_retry() {
        let mut r = Reconnect::new(S(1), S(30), false);
        assert_eq!(r.wait(None, 0.5), Duration::from_millis(500));
        assert_eq!(r.wait(None, 0.5), S(1));
        assert_eq!(r.wait(Some(S(7)), 0.5), S(7), "Retry-After wins");
        assert_eq!(r.wait(None, 0.5), S(2), "and does not count as an attempt");
        r.opened();
        r.retry_hint(5000);
        assert_eq!(r.wait(None, 0.5), Duration::from_millis(2500));
        assert_eq!(r.refused(503, Some(S(3))), Refusal::Retry(Some(S(3))));
        assert_eq!(r.refused(429, None), Refusal::Retry(None));
        assert_eq!(r.refused(400, None), Refusal::Final);
        assert_eq!(r.refused(401, None), Refusal::Final, "no provider to ask");
    }

    #[test]
    fn a_token_is_fetched_first_after_revoked_and_once_after_a_401() {
        let mut r = Reconnect::new(S(1), S(30), true);
        assert!(r.need_token, "before the first connect");
        r.need_token = false;
        r.revoked();
        assert!(r.need_token);
        r.need_token = false;
        assert_eq!(r.refused(401, None), Refusal::NewToken);
        assert!(r.need_token);
        assert_eq!(
            r.refused(401, None),
            Refusal::Final,
            "a second 401 in a row"
        );
        r.opened();
        assert_eq!(r.refused(401, None), Refusal::NewToken, "counted afresh");
    }

    proptest! {
        #[test]
        fn any_retry_after_value_is_read_without_panicking(value in "\\PC{0,40}") {
            if let Some(wait) = retry_after(&value, S(60), SystemTime::now()) {
                prop_assert!(wait <= S(60));
            }
        }

        #[test]
        fn every_fixdate_reads_back(secs in 0u64..253_402_300_799) {
            let days = secs / 86_400;
            // Civil date from days (the inverse of http_date's algorithm).
            let z = days + 719_468;
            let era = z / 146_097;
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let day = doy - (153 * mp + 2) / 5 + 1;
            let month = if mp < 10 { mp + 3 } else { mp - 9 };
            let year = yoe + era * 400 + u64::from(month <= 2);
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let text = format!(
                "Mon, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
                MONTHS[month as usize - 1],
                secs % 86_400 / 3600,
                secs % 3600 / 60,
                secs % 60
            );
            prop_assert_eq!(http_date(&text), Some(secs));
        }
    }
}
