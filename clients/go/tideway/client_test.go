package tideway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"
)

// scripted is a server answering its n-th request with handlers[n] (the last repeats),
// on a real socket.
type scripted struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
}

func script(t *testing.T, handlers ...http.HandlerFunc) *scripted {
	s := &scripted{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.requests)
		s.requests = append(s.requests, r)
		s.mu.Unlock()
		if n >= len(handlers) {
			n = len(handlers) - 1
		}
		handlers[n](w, r)
	}))
	t.Cleanup(func() {
		s.CloseClientConnections()
		s.Close()
	})
	return s
}

func (s *scripted) header(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var values []string
	for _, r := range s.requests {
		values = append(values, r.Header.Get(name))
	}
	return values
}

func stream(body string, end bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		w.WriteHeader(200)
		fmt.Fprint(w, body)
		w.(http.Flusher).Flush()
		if !end {
			<-r.Context().Done()
		}
	}
}

func refuse(status int, code, retryAfter string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("retry-after", retryAfter)
		}
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, code)
	}
}

// fakeClock records each wait and returns at once.
type fakeClock struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (f *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, d)
	return ctx.Err()
}

func half() float64 { return 0.5 }

func TestBackoffStaysBelowItsCeilingFromZeroUp(t *testing.T) {
	zero := func() float64 { return 0 }
	if d := BackoffDelay(0, time.Second, 30*time.Second, zero); d != 0 {
		t.Fatalf("random 0 waits %v", d)
	}
	if d := BackoffDelay(3, time.Second, 30*time.Second, half); d != 4*time.Second {
		t.Fatalf("attempt 3 at half waits %v, want 4s", d)
	}
	if d := BackoffDelay(500, time.Second, 30*time.Second, half); d != 15*time.Second {
		t.Fatalf("a late attempt at half waits %v, want the cap's half", d)
	}
	random, seen := defaultRandom(), map[time.Duration]bool{}
	for i := 0; i < 1000; i++ {
		d := BackoffDelay(0, 2*time.Second, 30*time.Second, random)
		if d < 0 || d >= 2*time.Second {
			t.Fatalf("%v is outside [0, 2s)", d)
		}
		seen[d] = true
	}
	if len(seen) < 500 {
		t.Fatalf("only %d distinct delays of 1000", len(seen))
	}
}

func TestRetryAfterReadsSecondsAndDates(t *testing.T) {
	now := time.Unix(4, 0)
	cases := []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		{"2", 2 * time.Second, true},
		{"3600", time.Minute, true},
		{time.Unix(10, 0).UTC().Format(http.TimeFormat), 6 * time.Second, true},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, c := range cases {
		got, ok := RetryAfter(c.value, time.Minute, now)
		if got != c.want || ok != c.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", c.value, got, ok, c.want, c.ok)
		}
	}
}

func TestFirstConnectRetriedThenResumedWithTheGatewaysRetry(t *testing.T) {
	server := script(t,
		refuse(503, "unavailable", ""),
		refuse(429, "rate_limited", "7"),
		stream("retry: 5000\n\nid: e1\ntopic: a\ndata: one\n\n", true),
		stream("id: e2\ntopic: a\ndata: two\n\n", false),
	)
	clock := &fakeClock{}
	var states []State
	client := NewClientWith(server.URL, "", Options{Sleep: clock.sleep, Random: half})
	ctx := context.Background()
	sub, err := client.SubscribeWith(ctx, []string{"a"}, SubscribeOptions{OnState: func(s State) { states = append(states, s) }})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for len(ids) < 2 {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	sub.Close()
	if !reflect.DeepEqual(ids, []string{"e1", "e2"}) {
		t.Fatalf("ids %v", ids)
	}
	want := []time.Duration{500 * time.Millisecond, 7 * time.Second, 2500 * time.Millisecond}
	if !reflect.DeepEqual(clock.waits, want) {
		t.Fatalf("waits %v, want %v", clock.waits, want)
	}
	if got := server.header("last-event-id")[3]; got != "e1" {
		t.Fatalf("resumed after %q", got)
	}
	if want := []State{Open, Reconnecting, Open, Closed}; !reflect.DeepEqual(states, want) {
		t.Fatalf("states %v, want %v", states, want)
	}
}

func TestARefusalFailsAtOnce(t *testing.T) {
	server := script(t, refuse(400, "invalid_topic", ""))
	var states []State
	client := NewClientWith(server.URL, "", Options{Sleep: (&fakeClock{}).sleep})
	_, err := client.SubscribeWith(context.Background(), []string{"a"}, SubscribeOptions{OnState: func(s State) { states = append(states, s) }})
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != "invalid_topic" {
		t.Fatalf("err %v", err)
	}
	if !reflect.DeepEqual(states, []State{Closed}) {
		t.Fatalf("states %v", states)
	}
}

func TestTokenProviderCalledAgainAfterRevokedAnd401(t *testing.T) {
	server := script(t,
		stream("event: tideway.revoked\ndata: {\"reason\":\"token_expired\"}\n\n", true),
		refuse(401, "token_expired", ""),
		stream("id: e1\ntopic: a\ndata: one\n\n", false),
	)
	issued := 0
	provider := func(context.Context) (string, error) { issued++; return fmt.Sprintf("t%d", issued), nil }
	client := NewClientWith(server.URL, "", Options{Sleep: (&fakeClock{}).sleep})
	ctx := context.Background()
	sub, err := client.SubscribeWith(ctx, []string{"a"}, SubscribeOptions{TokenProvider: provider})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind == KindSystem {
			seen = append(seen, m.Event)
			continue
		}
		seen = append(seen, m.ID)
		break
	}
	sub.Close()
	if !reflect.DeepEqual(seen, []string{"tideway.revoked", "e1"}) {
		t.Fatalf("seen %v", seen)
	}
	if got := server.header("authorization"); !reflect.DeepEqual(got, []string{"Bearer t1", "Bearer t2", "Bearer t3"}) {
		t.Fatalf("tokens %v", got)
	}

	refusing := script(t, refuse(401, "invalid_token", ""))
	bad := func(context.Context) (string, error) { return "bad", nil }
	_, err = NewClientWith(refusing.URL, "", Options{Sleep: (&fakeClock{}).sleep}).SubscribeWith(ctx, []string{"a"}, SubscribeOptions{TokenProvider: bad})
	if err == nil || len(refusing.header("authorization")) != 2 {
		t.Fatalf("a second 401 must be final after one fresh token: %v, %d tries", err, len(refusing.header("authorization")))
	}
}

func TestGapsAreSurfacedWithTheirTopics(t *testing.T) {
	server := script(t, stream("event: tideway.gap\ndata: {\"reason\":\"history_evicted\",\"topics\":[\"a\"],\"lastEventId\":\"e0\"}\n\n", false))
	ctx := context.Background()
	sub, err := NewClient(server.URL, "").SubscribeWith(ctx, []string{"a"}, SubscribeOptions{LastEventID: "e0"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	m, err := sub.Next(ctx)
	if err != nil || m.Gap == nil || m.Gap.Reason != "history_evicted" || !reflect.DeepEqual(m.Gap.Topics, []string{"a"}) {
		t.Fatalf("message %+v, %v", m, err)
	}
}

func TestASilentStreamIsAbandonedAndResumed(t *testing.T) {
	server := script(t, stream(": hi\n\n", false), stream("id: e1\ntopic: a\ndata: one\n\n", false))
	ctx := context.Background()
	client := NewClientWith(server.URL, "", Options{Sleep: (&fakeClock{}).sleep})
	sub, err := client.SubscribeWith(ctx, []string{"a"}, SubscribeOptions{HeartbeatTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	m, err := sub.Next(ctx)
	if err != nil || m.ID != "e1" {
		t.Fatalf("message %+v, %v", m, err)
	}
	// The first stream's request was cancelled, so its handler saw it end.
	if err := server.requests[0].Context().Err(); err == nil {
		t.Fatal("the silent stream was left open")
	}
}

func TestPublishRetries5xxWithTheSameID(t *testing.T) {
	server := script(t, refuse(503, "unavailable", "2"), func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"accepted","topics":[{"topic":"a","seq":1}]}`)
	})
	clock := &fakeClock{}
	client := NewClientWith(server.URL, "key", Options{Sleep: clock.sleep})
	published, err := client.Publish(context.Background(), []string{"a"}, "evt-1", "hi", "")
	if err != nil || !published.Accepted || published.Topics["a"] != 1 {
		t.Fatalf("published %+v, %v", published, err)
	}
	if !reflect.DeepEqual(clock.waits, []time.Duration{2 * time.Second}) {
		t.Fatalf("waits %v", clock.waits)
	}
	if got := server.header("x-sse-id"); !reflect.DeepEqual(got, []string{"evt-1", "evt-1"}) {
		t.Fatalf("ids %v", got)
	}

	refusing := script(t, refuse(403, "topic_not_allowed", ""))
	if _, err := NewClientWith(refusing.URL, "key", Options{Sleep: clock.sleep}).Publish(context.Background(), []string{"a"}, "e", "x", ""); err == nil || len(refusing.header("x-sse-id")) != 1 {
		t.Fatalf("a refusal was retried or accepted: %v", err)
	}
}

func TestPublishTimesOutAndGivesUpAfterItsRetries(t *testing.T) {
	server := script(t, func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.ReadAll(r.Body)
		<-r.Context().Done()
	})
	clock := &fakeClock{}
	client := NewClientWith(server.URL, "key", Options{Timeout: 50 * time.Millisecond, Retries: 2, Sleep: clock.sleep, Random: func() float64 { return 0 }})
	_, err := client.Publish(context.Background(), []string{"a"}, "e", "x", "")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want a deadline", err)
	}
	if n := len(server.header("x-sse-id")); n != 3 {
		t.Fatalf("%d tries, want 3", n)
	}
}
