package smtp_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/smtp"
)

// A server that accepts and never sends its greeting does not hold the
// sender past the message's deadline (go-mail reads the greeting with no
// deadline of its own).
func TestASilentServerDoesNotHoldTheSender(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the test ends
		}
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	s, err := smtp.New(&smtp.Config{Host: host, Port: p, TLS: smtp.NoTLS, Timeout: time.Minute})
	require.NoError(t, err)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Send(ctx, &email.Message{From: "a@example.com", To: []string{"b@example.com"}, Subject: "s", Text: "t"})
	require.Error(t, err)
	require.Less(t, time.Since(start), 3*time.Second, "bounded by the message's deadline, not the minute of Timeout")
}
