// Package tideway is the Go client of Tideway, an event gateway: publish events over
// HTTP, and subscribe to Server-Sent Events with automatic reconnection and resume.
//
//	import "github.com/tideway-gateway/tideway/clients/go/tideway"
//
// Publish and PublishBatch give up on an exchange after Options.Timeout and send it
// again, with the same ids, after a failure that may pass (network errors, timeouts,
// 408, 429, 5xx), waiting what Retry-After says or a jittered backoff; the gateway
// delivers a retried event once. Subscribe returns once the stream is open, retrying
// while the gateway is unreachable or busy, and fails only if the gateway refuses.
// Subscription.Next then yields events, the gateway's own messages (a gap, a drain)
// and nothing else; state changes go to SubscribeOptions.OnState. Reconnects wait a
// full-jitter exponential backoff whose base is the gateway's retry: hint, and resume
// after the last event seen (Last-Event-ID). A TokenProvider is asked for a subscriber
// token before the first connect and again after the gateway revoked or refused the
// last one. The rules are those of every Tideway client: docs/clients.md.
//
// Standard library only; Go 1.19.
package tideway
