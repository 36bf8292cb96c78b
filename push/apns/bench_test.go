package apns_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
)

// Run with: go test -run '^$' -bench Send -benchtime 5s ./push/apns/
// Both variants talk to the same in-process fake APNs (HTTP/2 over TLS,
// JWT checked once per token) over one connection; "bare" is a plain
// apns2 token client loop, "herald" is this package's Client.

func runInFlight(b *testing.B, inflight int, send func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := send(int(i)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "notifications/s")
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkSend(b *testing.B) {
	tokens := make([]string, 1024)
	for i := range tokens {
		tokens[i] = pushtest.DeviceToken(fmt.Sprint(i))
	}
	for _, inflight := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("bare/inflight=%d", inflight), func(b *testing.B) {
			srv := pushtest.NewAPNs(b, nil)
			p8, keyID, teamID := srv.AuthKey()
			key, err := token.AuthKeyFromBytes(p8.Bytes())
			if err != nil {
				b.Fatal(err)
			}
			c := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: keyID, TeamID: teamID})
			c.Host = srv.URL()
			// apns2's own client settings, with the fake's trust root.
			c.HTTPClient = &http.Client{
				Transport: &http2.Transport{TLSClientConfig: srv.TLSConfig(), ReadIdleTimeout: apns2.ReadIdleTimeout},
				Timeout:   apns2.HTTPClientTimeout,
			}
			defer c.CloseIdleConnections()
			runInFlight(b, inflight, func(i int) error {
				res, err := c.PushWithContext(context.Background(), &apns2.Notification{
					DeviceToken: tokens[i%len(tokens)], Topic: "com.example.app",
					Payload: payload.NewPayload().AlertTitle("Hello").AlertBody("World"),
				})
				if err == nil && res.StatusCode != 200 {
					err = fmt.Errorf("status %d %s", res.StatusCode, res.Reason)
				}
				return err
			})
		})
		b.Run(fmt.Sprintf("herald/inflight=%d", inflight), func(b *testing.B) {
			srv := pushtest.NewAPNs(b, nil)
			c, err := apns.New((&apns.Config{Topic: "com.example.app"}).UseFake(srv))
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseIdleConnections()
			runInFlight(b, inflight, func(i int) error {
				_, err := c.Send(context.Background(), &push.Message{
					Token:        tokens[i%len(tokens)],
					Notification: push.Notification{Title: "Hello", Body: "World"},
				})
				return err
			})
		})
	}
}

// BenchmarkBuild is the wrapper's own work per notification (validation,
// payload, headers), without the network: compare it with the ~60–73 µs of
// CPU the apns2 client spends per notification.
func BenchmarkBuild(b *testing.B) {
	srv := pushtest.NewAPNs(b, nil)
	c, err := apns.New((&apns.Config{Topic: "com.example.app"}).UseFake(srv))
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseIdleConnections()
	m := &push.Message{Token: pushtest.DeviceToken("a"), IdempotencyKey: "k", Notification: push.Notification{Title: "Hello", Body: "World"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Build(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBarePayload is what a bare apns2 caller spends on the same
// payload with apns2's builder, for comparison with BenchmarkBuild.
func BenchmarkBarePayload(b *testing.B) {
	tok := pushtest.DeviceToken("a")
	b.ReportAllocs()
	for b.Loop() {
		n := &apns2.Notification{DeviceToken: tok, Topic: "com.example.app",
			Payload: payload.NewPayload().AlertTitle("Hello").AlertBody("World")}
		if _, err := n.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}
