// Command publisher publishes one event.
//
//	TIDEWAY_URL=http://127.0.0.1:8080 TIDEWAY_API_KEY=... go run ./cmd/publisher TOPIC ID DATA [EVENT]
//
// It prints accepted or dropped (no topic had a subscriber) and exits 1 on an error.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"tideway.dev/examples/tideway"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: publisher TOPIC ID DATA [EVENT]")
		os.Exit(2)
	}
	event := ""
	if len(os.Args) > 4 {
		event = os.Args[4]
	}
	url := os.Getenv("TIDEWAY_URL")
	if url == "" {
		url = "http://127.0.0.1:8080"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := tideway.NewClient(url, os.Getenv("TIDEWAY_API_KEY"))
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
