package tideway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Options tune a Client; the zero value of each field means its default.
type Options struct {
	// Timeout bounds one publish exchange; default 10 s.
	Timeout time.Duration
	// Retries is how many times a publish is sent again after a failure that may pass;
	// default 3, and -1 means none.
	Retries int
	// HTTP is the client to use; default one with its own kept-alive connections.
	HTTP *http.Client
	// Sleep waits; tests pass a fake clock. Default Sleep.
	Sleep func(ctx context.Context, d time.Duration) error
	// Random returns a number in [0, 1) for jitter; tests pass a fixed one.
	Random func() float64
}

// Client talks to one gateway. Publishers need an API key; subscribers do not.
type Client struct {
	BaseURL string
	APIKey  string
	HTTP    *http.Client
	options Options
}

const (
	publishBackoffBase = 100 * time.Millisecond
	publishBackoffCap  = 5 * time.Second
	retryAfterCap      = time.Minute
)

// NewClient returns a client of the gateway at baseURL (http[s]://host:port) with the
// default options.
func NewClient(baseURL, apiKey string) *Client {
	return NewClientWith(baseURL, apiKey, Options{})
}

// NewClientWith returns a client of the gateway at baseURL with options.
func NewClientWith(baseURL, apiKey string, options Options) *Client {
	if options.Timeout == 0 {
		options.Timeout = 10 * time.Second
	}
	if options.Retries == 0 {
		options.Retries = 3
	} else if options.Retries < 0 {
		options.Retries = 0
	}
	if options.Sleep == nil {
		options.Sleep = Sleep
	}
	if options.Random == nil {
		options.Random = defaultRandom()
	}
	httpClient := options.HTTP
	if httpClient == nil {
		httpClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apiKey, HTTP: httpClient, options: options}
}

// Error is an answer of the gateway that is not a success.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the wait the gateway asked for, if it did.
	RetryAfter time.Duration
	HasRetry   bool
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Retryable says whether the same request may succeed later: 408, 429 or 5xx.
func (e *Error) Retryable() bool {
	return e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

func apiError(resp *http.Response) *Error {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	wait, hasRetry := RetryAfter(resp.Header.Get("retry-after"), retryAfterCap, time.Now())
	e := &Error{Status: resp.StatusCode, Code: "unknown", Message: string(raw), RetryAfter: wait, HasRetry: hasRetry}
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	return e
}

// post sends body to path, retrying network errors, timeouts, 408, 429 and 5xx; the
// request is the same each time (same ids), so the gateway delivers it once. On
// success it decodes the answer into reply.
func (c *Client) post(ctx context.Context, path string, header http.Header, body []byte, reply interface{}) error {
	for attempt := 0; ; attempt++ {
		err := c.postOnce(ctx, path, header, body, reply)
		if err == nil {
			return nil
		}
		var wait time.Duration
		var apiErr *Error
		switch {
		case ctx.Err() != nil:
			return err
		case errors.As(err, &apiErr):
			if !apiErr.Retryable() {
				return err
			}
			wait = BackoffDelay(attempt, publishBackoffBase, publishBackoffCap, c.options.Random)
			if apiErr.HasRetry {
				wait = apiErr.RetryAfter
			}
		case isNetwork(err):
			wait = BackoffDelay(attempt, publishBackoffBase, publishBackoffCap, c.options.Random)
		default:
			return err
		}
		if attempt >= c.options.Retries {
			return err
		}
		if sleepErr := c.options.Sleep(ctx, wait); sleepErr != nil {
			return err
		}
	}
}

func isNetwork(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func (c *Client) postOnce(ctx context.Context, path string, header http.Header, body []byte, reply interface{}) error {
	ctx, cancel := context.WithTimeout(ctx, c.options.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = header.Clone()
	if c.APIKey != "" {
		req.Header.Set("authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return apiError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(reply); err != nil {
		if isNetwork(err) {
			return err
		}
		return fmt.Errorf("the gateway's answer: %w", err)
	}
	return nil
}

type topicSeq struct {
	Topic string `json:"topic"`
	Seq   uint64 `json:"seq"`
}

func seqs(topics []topicSeq) map[string]uint64 {
	out := make(map[string]uint64, len(topics))
	for _, t := range topics {
		out[t.Topic] = t.Seq
	}
	return out
}

// Published says what became of a publish: accepted on some topics, or dropped because
// no topic had a subscriber.
type Published struct {
	Accepted bool
	Topics   map[string]uint64
}

// Publish sends data with id (and SSE type event, if not empty) to topics.
func (c *Client) Publish(ctx context.Context, topics []string, id, data, event string) (Published, error) {
	header := http.Header{}
	header.Set("x-sse-topic", strings.Join(topics, ","))
	header.Set("x-sse-id", id)
	if event != "" {
		header.Set("x-sse-event", event)
	}
	var reply struct {
		Status string     `json:"status"`
		Topics []topicSeq `json:"topics"`
	}
	if err := c.post(ctx, "/v1/publish", header, []byte(data), &reply); err != nil {
		return Published{}, err
	}
	return Published{Accepted: reply.Status == "accepted", Topics: seqs(reply.Topics)}, nil
}

// BatchEvent is one event of a batch.
type BatchEvent struct {
	Topics []string `json:"topics"`
	ID     string   `json:"id"`
	Data   string   `json:"data"`
	Event  string   `json:"event,omitempty"`
}

// BatchOutcome is what became of one event of a batch: Status is accepted (with Topics),
// dropped, error (with Code and Message) or skipped (another event of an atomic batch was
// refused).
type BatchOutcome struct {
	Status  string
	ID      string
	Topics  map[string]uint64
	Code    string
	Message string
}

// PublishBatch sends events in one request, in order (events on one topic arrive in this
// order), and returns each one's outcome. With atomic, every event is published or none
// is, and a refusal is returned as the error. A store error stops the batch: that event
// and every later one come back with Code "store_unavailable"; send them again, in order,
// from the first (those that did land are answered as retries).
func (c *Client) PublishBatch(ctx context.Context, events []BatchEvent, atomic bool) ([]BatchOutcome, error) {
	body, err := json.Marshal(struct {
		Events []BatchEvent `json:"events"`
		Atomic bool         `json:"atomic"`
	}{events, atomic})
	if err != nil {
		return nil, err
	}
	header := http.Header{}
	header.Set("content-type", "application/json")
	var reply struct {
		Results []struct {
			Status string     `json:"status"`
			ID     string     `json:"id"`
			Topics []topicSeq `json:"topics"`
			Error  struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		} `json:"results"`
	}
	if err := c.post(ctx, "/v1/publish/batch", header, body, &reply); err != nil {
		return nil, err
	}
	outcomes := make([]BatchOutcome, 0, len(reply.Results))
	for _, r := range reply.Results {
		outcomes = append(outcomes, BatchOutcome{Status: r.Status, ID: r.ID, Topics: seqs(r.Topics), Code: r.Error.Code, Message: r.Error.Message})
	}
	return outcomes, nil
}
