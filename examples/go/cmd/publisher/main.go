// Command publisher publishes one event, or a batch of them.
//
//	TIDEWAY_URL=http://127.0.0.1:8080 TIDEWAY_API_KEY=... go run ./cmd/publisher TOPIC ID DATA [EVENT]
//	... go run ./cmd/publisher --batch TOPIC < events.jsonl
//
// It prints accepted or dropped (no topic had a subscriber) and exits 1 on an error. With
// --batch, it reads one JSON object {"id", "data", "event"?} per line of stdin, publishes
// them all to TOPIC in one request, and prints each one's outcome on its own line
// (accepted, dropped, or the error code).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tideway-gateway/tideway/clients/go/tideway"
)

func main() {
	url := os.Getenv("TIDEWAY_URL")
	if url == "" {
		url = "http://127.0.0.1:8080"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := tideway.NewClient(url, os.Getenv("TIDEWAY_API_KEY"))
	if len(os.Args) == 3 && os.Args[1] == "--batch" {
		os.Exit(batch(ctx, client, os.Args[2]))
	}
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: publisher TOPIC ID DATA [EVENT] | --batch TOPIC")
		os.Exit(2)
	}
	event := ""
	if len(os.Args) > 4 {
		event = os.Args[4]
	}
	published, err := client.Publish(ctx, []string{os.Args[1]}, os.Args[2], os.Args[3], event)
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(1)
	}
	if published.Accepted {
		fmt.Println("accepted")
	} else {
		fmt.Println("dropped")
	}
}

// batch publishes the events of stdin to topic in one request; it returns the exit code.
func batch(ctx context.Context, client *tideway.Client, topic string) int {
	var events []tideway.BatchEvent
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" {
			continue
		}
		var e struct {
			ID    string  `json:"id"`
			Data  string  `json:"data"`
			Event *string `json:"event"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			fmt.Fprintln(os.Stderr, "publisher: a line of stdin is not an event:", err)
			return 2
		}
		event := tideway.BatchEvent{Topics: []string{topic}, ID: e.ID, Data: e.Data}
		if e.Event != nil {
			event.Event = *e.Event
		}
		events = append(events, event)
	}
	outcomes, err := client.PublishBatch(ctx, events, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		return 1
	}
	for _, outcome := range outcomes {
		if outcome.Status == "error" {
			fmt.Println(outcome.Code)
		} else {
			fmt.Println(outcome.Status)
		}
	}
	return 0
}
