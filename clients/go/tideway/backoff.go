package tideway

import (
	"context"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BackoffDelay is the wait before try number attempt (0 for the first retry): a
// uniformly random time below min(cap, base*2^attempt), so clients cut off together
// come back spread out. random returns a number in [0, 1).
func BackoffDelay(attempt int, base, cap time.Duration, random func() float64) time.Duration {
	if attempt > 30 {
		attempt = 30
	}
	ceiling := cap
	if scaled := base << uint(attempt); scaled > 0 && scaled < cap {
		ceiling = scaled
	}
	return time.Duration(random() * float64(ceiling))
}

// RetryAfter is the wait a Retry-After value asks for (seconds or an HTTP date),
// capped; ok is false if it is absent or unreadable.
func RetryAfter(value string, cap time.Duration, now time.Time) (wait time.Duration, ok bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if seconds, err := strconv.ParseUint(value, 10, 32); err == nil {
		wait = time.Duration(seconds) * time.Second
	} else if when, err := http.ParseTime(value); err == nil {
		wait = when.Sub(now)
		if wait < 0 {
			wait = 0
		}
	} else {
		return 0, false
	}
	if wait > cap {
		wait = cap
	}
	return wait, true
}

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// defaultRandom is a seeded source safe for concurrent use.
func defaultRandom() func() float64 {
	source := rand.New(rand.NewSource(time.Now().UnixNano()))
	var mu sync.Mutex
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return source.Float64()
	}
}
