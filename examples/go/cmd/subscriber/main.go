// Command subscriber prints each event as one JSON line: {"topic","id","event","data"}.
//
//	TIDEWAY_URL=http://127.0.0.1:8080 go run ./cmd/subscriber TOPICS [COUNT]
//
// TOPICS is comma-separated. With COUNT it exits after that many events. It reconnects
// by itself and resumes where it left off. A gap (events of some topics may be missing)
// is printed on stdout too, as {"gap":{"reason","topics"}}; the gateway's other
// messages and the connection's state go to stderr.
//
// For private topics, set TIDEWAY_TOKEN_KEY to an API key with the sign scope: the
// example then plays its own backend, asking the gateway for a token (valid
// TIDEWAY_TOKEN_TTL seconds, default 300) whenever the client needs a new one.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/tideway-gateway/tideway/clients/go/tideway"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: subscriber TOPICS [COUNT]")
		os.Exit(2)
	}
	count := -1
	if len(os.Args) > 2 {
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "subscriber: COUNT must be a number")
			os.Exit(2)
		}
		count = n
	}
	url := os.Getenv("TIDEWAY_URL")
	if url == "" {
		url = "http://127.0.0.1:8080"
	}
	ctx := context.Background()
	topics := strings.Split(os.Args[1], ",")
	options := tideway.SubscribeOptions{
		TokenProvider: tokenProvider(url, topics),
		OnState:       func(s tideway.State) { fmt.Fprintln(os.Stderr, "state:", s) },
	}
	subscription, err := tideway.NewClient(url, "").SubscribeWith(ctx, topics, options)
	if err != nil {
		fmt.Fprintln(os.Stderr, "subscriber:", err)
		os.Exit(1)
	}
	defer subscription.Close()
	fmt.Fprintln(os.Stderr, "subscribed to", strings.Join(topics, ","))
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	for seen := 0; count < 0 || seen < count; {
		message, err := subscription.Next(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "subscriber:", err)
			os.Exit(1)
		}
		if message.Kind == tideway.KindSystem {
			if message.Gap != nil {
				gap := map[string]interface{}{"reason": message.Gap.Reason, "topics": message.Gap.Topics}
				_ = out.Encode(map[string]interface{}{"gap": gap})
			}
			fmt.Fprintln(os.Stderr, "gateway:", message.Event, message.Data)
			continue
		}
		var event *string
		if message.Event != "" {
			event = &message.Event
		}
		line := map[string]interface{}{"topic": message.Topic, "id": message.ID, "event": event, "data": message.Data}
		if err := out.Encode(line); err != nil {
			os.Exit(1)
		}
		seen++
	}
}

// tokenProvider asks the gateway for subscriber tokens with TIDEWAY_TOKEN_KEY, as a
// backend would; nil without it.
func tokenProvider(url string, topics []string) tideway.TokenProvider {
	key := os.Getenv("TIDEWAY_TOKEN_KEY")
	if key == "" {
		return nil
	}
	ttl := 300
	if n, err := strconv.Atoi(os.Getenv("TIDEWAY_TOKEN_TTL")); err == nil {
		ttl = n
	}
	return func(ctx context.Context) (string, error) {
		body, _ := json.Marshal(map[string]interface{}{"subject": "example-subscriber", "topics": topics, "ttlSeconds": ttl})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/tokens", bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("authorization", "Bearer "+key)
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var reply struct {
			Token string `json:"token"`
		}
		if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&reply) != nil {
			return "", fmt.Errorf("token: the gateway answered %s", resp.Status)
		}
		fmt.Fprintln(os.Stderr, "token: fetched a new one")
		return reply.Token, nil
	}
}
