// Command subscriber prints each event as one JSON line: {"topic","id","event","data"}.
//
//	TIDEWAY_URL=http://127.0.0.1:8080 go run ./cmd/subscriber TOPICS [COUNT]
//
// TOPICS is comma-separated. With COUNT it exits after that many events. It reconnects
// by itself and resumes where it left off; system messages go to stderr.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"tideway.dev/examples/tideway"
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
	subscription, err := tideway.NewClient(url, "").Subscribe(ctx, topics)
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
		if message.System {
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
