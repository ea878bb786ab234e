package tideway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to one gateway. Publishers need an API key; subscribers do not.
type Client struct {
	BaseURL string
	APIKey  string
	HTTP    *http.Client
}

// NewClient returns a client of the gateway at baseURL (http://host:port).
func NewClient(baseURL, apiKey string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apiKey, HTTP: &http.Client{}}
}

// Error is an answer of the gateway that is not a success.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func apiError(resp *http.Response) error {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(raw, &body) != nil || body.Error.Code == "" {
		return &Error{Status: resp.StatusCode, Code: "unknown", Message: string(raw)}
	}
	return &Error{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message}
}

// Published says what became of a publish: accepted on some topics, or dropped because
// no topic had a subscriber.
type Published struct {
	Accepted bool
	Topics   map[string]uint64
}

// Publish sends data with id (and SSE type event, if not empty) to topics.
func (c *Client) Publish(ctx context.Context, topics []string, id, data, event string) (Published, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+"/v1/publish", strings.NewReader(data))
	if err != nil {
		return Published{}, err
	}
	req.Header.Set("x-sse-topic", strings.Join(topics, ","))
	req.Header.Set("x-sse-id", id)
	if event != "" {
		req.Header.Set("x-sse-event", event)
	}
	if c.APIKey != "" {
		req.Header.Set("authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Published{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return Published{}, apiError(resp)
	}
	var reply struct {
		Status string `json:"status"`
		Topics []struct {
			Topic string `json:"topic"`
			Seq   uint64 `json:"seq"`
		} `json:"topics"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		return Published{}, fmt.Errorf("publish answer: %w", err)
	}
	published := Published{Accepted: reply.Status == "accepted", Topics: map[string]uint64{}}
	for _, t := range reply.Topics {
		published.Topics[t.Topic] = t.Seq
	}
	return published, nil
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
// is, and a refusal is returned as the error.
func (c *Client) PublishBatch(ctx context.Context, events []BatchEvent, atomic bool) ([]BatchOutcome, error) {
	body, err := json.Marshal(struct {
		Events []BatchEvent `json:"events"`
		Atomic bool         `json:"atomic"`
	}{events, atomic})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+"/v1/publish/batch", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("content-type", "application/json")
	if c.APIKey != "" {
		req.Header.Set("authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, apiError(resp)
	}
	var reply struct {
		Results []struct {
			Status string `json:"status"`
			ID     string `json:"id"`
			Topics []struct {
				Topic string `json:"topic"`
				Seq   uint64 `json:"seq"`
			} `json:"topics"`
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		return nil, fmt.Errorf("batch answer: %w", err)
	}
	outcomes := make([]BatchOutcome, 0, len(reply.Results))
	for _, r := range reply.Results {
		outcome := BatchOutcome{Status: r.Status, ID: r.ID, Topics: map[string]uint64{}, Code: r.Error.Code, Message: r.Error.Message}
		for _, t := range r.Topics {
			outcome.Topics[t.Topic] = t.Seq
		}
		outcomes = append(outcomes, outcome)
	}
	return outcomes, nil
}

// Message is what a subscription delivers: an event, or (System true) a message of the
// gateway's own such as tideway.gap or tideway.drain.
type Message struct {
	Topic  string
	ID     string
	Event  string
	Data   string
	System bool
}

// Subscription is an open subscription; Next reconnects and resumes by itself.
type Subscription struct {
	client           *Client
	topics           []string
	LastEventID      string
	HeartbeatTimeout time.Duration
	MaxBackoff       time.Duration
	body             io.ReadCloser
	lines            chan chunk
	buffer           string
	pending          []Message
}

type chunk struct {
	text string
	err  error
}

// Subscribe opens a subscription to topics now; a refusal (a 4xx answer) is an *Error.
func (c *Client) Subscribe(ctx context.Context, topics []string) (*Subscription, error) {
	s := &Subscription{client: c, topics: topics, HeartbeatTimeout: 45 * time.Second, MaxBackoff: 10 * time.Second}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Subscription) connect(ctx context.Context) error {
	query := url.Values{"topic": s.topics}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.client.BaseURL+"/v1/stream?"+query.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("accept", "text/event-stream")
	if s.LastEventID != "" {
		req.Header.Set("last-event-id", s.LastEventID)
	}
	resp, err := s.client.HTTP.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return apiError(resp)
	}
	s.body, s.buffer = resp.Body, ""
	s.lines = make(chan chunk, 16)
	go func(body io.Reader, out chan<- chunk) {
		reader := bufio.NewReader(body)
		buf := make([]byte, 32*1024)
		for {
			n, err := reader.Read(buf)
			out <- chunk{text: string(buf[:n]), err: err}
			if err != nil {
				close(out)
				return
			}
		}
	}(resp.Body, s.lines)
	return nil
}

// Close ends the subscription.
func (s *Subscription) Close() error {
	if s.body != nil {
		return s.body.Close()
	}
	return nil
}

// Next waits for the next message, reconnecting with backoff when the stream drops or
// stays silent past HeartbeatTimeout. It fails only when the gateway refuses the
// subscription or ctx ends.
func (s *Subscription) Next(ctx context.Context) (Message, error) {
	delay := 250 * time.Millisecond
	for {
		if len(s.pending) > 0 {
			m := s.pending[0]
			s.pending = s.pending[1:]
			return m, nil
		}
		if s.body == nil {
			select {
			case <-ctx.Done():
				return Message{}, ctx.Err()
			case <-time.After(delay):
			}
			err := s.connect(ctx)
			if apiErr, ok := err.(*Error); ok && apiErr.Status >= 400 && apiErr.Status < 500 && apiErr.Status != 429 {
				return Message{}, err
			}
			if err != nil {
				delay *= 2
				if delay > s.MaxBackoff {
					delay = s.MaxBackoff
				}
				continue
			}
			delay = 250 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return Message{}, ctx.Err()
		case c, open := <-s.lines:
			if !open || c.err != nil {
				s.buffer += c.text
				s.parse()
				s.body.Close()
				s.body = nil
				continue
			}
			s.buffer += c.text
			s.parse()
		case <-time.After(s.HeartbeatTimeout):
			s.body.Close()
			s.body = nil
		}
	}
}

func (s *Subscription) parse() {
	blocks, rest := ParseBlocks(s.buffer)
	s.buffer = rest
	for _, b := range blocks {
		if !b.HasData {
			continue
		}
		if strings.HasPrefix(b.Event, "tideway.") {
			s.pending = append(s.pending, Message{Event: b.Event, Data: b.Data, System: true})
			continue
		}
		s.LastEventID = b.ID
		s.pending = append(s.pending, Message{Topic: b.Fields["topic"], ID: b.ID, Event: b.Event, Data: b.Data})
	}
}
