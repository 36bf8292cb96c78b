package smtp_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
)

// Run with: go test -run '^$' -bench Send -benchtime 3s ./email/smtp/
// Emails per second to the loopback emailtest server (STARTTLS + AUTH
// PLAIN), reusing pooled connections against a new connection per message.
func BenchmarkSend(b *testing.B) {
	for _, tc := range []struct {
		name    string
		perConn int
	}{{"reuse", 0}, {"new-connection-per-message", 1}} {
		for _, senders := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/senders=%d", tc.name, senders), func(b *testing.B) {
				srv := emailtest.NewServer(b, nil)
				s, err := smtp.New((&smtp.Config{PoolSize: senders, MaxPerConnection: tc.perConn}).UseFake(srv))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				m := &email.Message{From: "shop@example.com", To: []string{"ada@example.com"}, Subject: "Order", Text: "It shipped."}
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if _, err := s.Send(ctx, m); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "emails/s")
				b.ReportMetric(float64(srv.Connections()), "connections")
			})
		}
	}
}
