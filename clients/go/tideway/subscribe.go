package tideway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// State is where a subscription stands.
type State string

// The states of a subscription.
const (
	Connecting   State = "connecting"
	Open         State = "open"
	Reconnecting State = "reconnecting"
	Closed       State = "closed"
)

// TokenProvider gives a subscriber token: called before the first connect, and again
// after the gateway revoked (tideway.revoked) or refused (401) the last one.
type TokenProvider func(ctx context.Context) (string, error)

// SubscribeOptions tune a subscription; the zero value of each field means its default.
type SubscribeOptions struct {
	// LastEventID resumes after this id from the first connection on.
	LastEventID string
	// HeartbeatTimeout: reconnect when nothing (not even a heartbeat) came for this
	// long; default 45 s.
	HeartbeatTimeout time.Duration
	// MinBackoff is the backoff's first ceiling until the gateway says otherwise with
	// retry:; default 1 s.
	MinBackoff time.Duration
	// MaxBackoff caps the backoff; default 30 s.
	MaxBackoff time.Duration
	// Token is a fixed subscriber token, for private topics.
	Token string
	// TokenProvider fetches one when needed instead.
	TokenProvider TokenProvider
	// Tenant is the tenant whose public topics to receive.
	Tenant string
	// OnState is told every change of state.
	OnState func(State)
}

// Kind says what a Message is.
type Kind int

// The kinds of messages.
const (
	// KindEvent is an event a publisher sent.
	KindEvent Kind = iota
	// KindSystem is a message of the gateway's own (tideway.gap, tideway.drain, ...).
	KindSystem
)

// Gap is what a tideway.gap says: events of Topics may be missing here.
type Gap struct {
	Reason      string   `json:"reason"`
	Topics      []string `json:"topics"`
	LastEventID string   `json:"lastEventId"`
}

// Message is what a subscription delivers: an event, or a message of the gateway's own
// (Kind KindSystem, Event its name, Gap filled for tideway.gap).
type Message struct {
	Kind  Kind
	Topic string
	ID    string
	Event string
	Data  string
	Gap   *Gap
}

// Subscription is an open subscription; Next reconnects and resumes by itself.
type Subscription struct {
	client       *Client
	topics       []string
	options      SubscribeOptions
	lastEventID  string
	state        State
	token        string
	needToken    bool
	refusedToken int
	attempt      int
	base         time.Duration
	body         io.ReadCloser
	cancel       context.CancelFunc
	chunks       chan chunk
	buffer       string
	pending      []Message
}

type chunk struct {
	text string
	err  error
}

// Subscribe subscribes to topics with the default options.
func (c *Client) Subscribe(ctx context.Context, topics []string) (*Subscription, error) {
	return c.SubscribeWith(ctx, topics, SubscribeOptions{})
}

// SubscribeWith subscribes to topics. It returns once the stream is open, retrying while
// the gateway is unreachable or busy; a refusal (a bad topic, a missing token) is an
// *Error, and ctx ending stops the attempts.
func (c *Client) SubscribeWith(ctx context.Context, topics []string, options SubscribeOptions) (*Subscription, error) {
	if options.HeartbeatTimeout == 0 {
		options.HeartbeatTimeout = 45 * time.Second
	}
	if options.MinBackoff == 0 {
		options.MinBackoff = time.Second
	}
	if options.MaxBackoff == 0 {
		options.MaxBackoff = 30 * time.Second
	}
	s := &Subscription{
		client:      c,
		topics:      topics,
		options:     options,
		lastEventID: options.LastEventID,
		state:       Connecting,
		token:       options.Token,
		needToken:   options.TokenProvider != nil,
		base:        options.MinBackoff,
	}
	if err := s.connect(ctx, false); err != nil {
		return nil, err
	}
	return s, nil
}

// LastEventID is the id a reconnect resumes after.
func (s *Subscription) LastEventID() string { return s.lastEventID }

// State is where the subscription stands.
func (s *Subscription) State() State { return s.state }

func (s *Subscription) setState(state State) {
	if s.state != state {
		s.state = state
		if s.options.OnState != nil {
			s.options.OnState(state)
		}
	}
}

// connect opens a stream, trying until one opens (waiting first if wait), the gateway
// refuses, or ctx ends.
func (s *Subscription) connect(ctx context.Context, wait bool) error {
	var asked *time.Duration
	for {
		if wait {
			delay := BackoffDelay(s.attempt, s.base, s.options.MaxBackoff, s.client.options.Random)
			if asked != nil {
				delay = *asked
			} else {
				s.attempt++
			}
			if err := s.client.options.Sleep(ctx, delay); err != nil {
				s.setState(Closed)
				return err
			}
		}
		wait, asked = true, nil
		if s.needToken && s.options.TokenProvider != nil {
			token, err := s.options.TokenProvider(ctx)
			if err != nil {
				if ctx.Err() != nil {
					s.setState(Closed)
					return err
				}
				continue
			}
			s.token, s.needToken = token, false
		}
		err := s.open(ctx)
		if err == nil {
			s.attempt, s.refusedToken = 0, 0
			s.setState(Open)
			return nil
		}
		if ctx.Err() != nil {
			s.setState(Closed)
			return err
		}
		var apiErr *Error
		if !errors.As(err, &apiErr) {
			continue // unreachable or broken: back off and try again
		}
		if apiErr.Status == http.StatusUnauthorized && s.options.TokenProvider != nil {
			s.refusedToken++
			if s.refusedToken == 1 {
				s.needToken, wait = true, false
				continue
			}
		}
		if !apiErr.Retryable() {
			s.setState(Closed)
			return err
		}
		if apiErr.HasRetry {
			asked = &apiErr.RetryAfter
		}
	}
}

func (s *Subscription) open(ctx context.Context) error {
	query := url.Values{"topic": s.topics}
	if s.options.Tenant != "" {
		query.Set("tenant", s.options.Tenant)
	}
	streamCtx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(streamCtx, http.MethodGet, s.client.BaseURL+"/v1/stream?"+query.Encode(), nil)
	if err != nil {
		cancel()
		return err
	}
	req.Header.Set("accept", "text/event-stream")
	if s.lastEventID != "" {
		req.Header.Set("last-event-id", s.lastEventID)
	}
	if s.token != "" {
		req.Header.Set("authorization", "Bearer "+s.token)
	}
	// The connect itself is bounded by ctx; once open, the stream lives until Close.
	connected := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			cancel()
		case <-connected:
		}
	}()
	resp, err := s.client.HTTP.Do(req)
	close(connected)
	if err != nil {
		cancel()
		return err
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		return apiError(resp)
	}
	s.body, s.cancel, s.buffer = resp.Body, cancel, ""
	s.chunks = make(chan chunk, 16)
	go func(body io.Reader, out chan<- chunk) {
		buf := make([]byte, 32*1024)
		for {
			n, err := body.Read(buf)
			out <- chunk{text: string(buf[:n]), err: err}
			if err != nil {
				close(out)
				return
			}
		}
	}(resp.Body, s.chunks)
	return nil
}

// drop ends the current stream, giving its connection back.
func (s *Subscription) drop() {
	if s.body != nil {
		s.cancel()
		s.body.Close()
		s.body = nil
	}
}

// Close ends the subscription.
func (s *Subscription) Close() error {
	s.drop()
	s.setState(Closed)
	return nil
}

// Next waits for the next message, reconnecting with backoff when the stream drops or
// stays silent past HeartbeatTimeout. It fails only when the gateway refuses the
// subscription or ctx ends.
func (s *Subscription) Next(ctx context.Context) (Message, error) {
	for {
		if len(s.pending) > 0 {
			m := s.pending[0]
			s.pending = s.pending[1:]
			return m, nil
		}
		if s.state == Closed {
			return Message{}, errors.New("tideway: the subscription is closed")
		}
		if s.body == nil {
			s.setState(Reconnecting)
			if err := s.connect(ctx, true); err != nil {
				return Message{}, err
			}
		}
		timer := time.NewTimer(s.options.HeartbeatTimeout)
		select {
		case <-ctx.Done():
			timer.Stop()
			return Message{}, ctx.Err()
		case c, open := <-s.chunks:
			timer.Stop()
			s.buffer += c.text
			s.parse()
			if !open || c.err != nil {
				s.drop()
			}
		case <-timer.C:
			s.drop() // silent too long: its reader ends with the cancelled request
		}
	}
}

func (s *Subscription) parse() {
	blocks, rest := ParseBlocks(s.buffer)
	s.buffer = rest
	for _, b := range blocks {
		if retry, ok := b.Fields["retry"]; ok {
			if ms, err := strconv.ParseUint(retry, 10, 32); err == nil {
				s.base = time.Duration(ms) * time.Millisecond
			}
		}
		if !b.HasData {
			continue
		}
		if strings.HasPrefix(b.Event, "tideway.") {
			if b.Event == "tideway.revoked" && s.options.TokenProvider != nil {
				s.needToken = true
			}
			message := Message{Kind: KindSystem, Event: b.Event, Data: b.Data}
			if b.Event == "tideway.gap" {
				var gap Gap
				if json.Unmarshal([]byte(b.Data), &gap) == nil {
					message.Gap = &gap
				}
			}
			s.pending = append(s.pending, message)
			continue
		}
		s.lastEventID = b.ID
		s.pending = append(s.pending, Message{Kind: KindEvent, Topic: b.Fields["topic"], ID: b.ID, Event: b.Event, Data: b.Data})
	}
}
