// Command service is a notification service built on herald, the shape a
// host application takes: an HTTP API that accepts messages (202 only once
// they are durable), takes client engagement events, and reports the
// queue and the providers' circuits. It runs on the embedded store.
//
//	go run ./examples/service -addr 127.0.0.1:8080
//	curl -s localhost:8080/v1/messages -d '{"IdempotencyKey":"order-42","User":"u1","Transactional":true,
//	  "Email":{"From":"shop@example.com","To":["ada@example.com"],"Subject":"Shipped","Text":"On its way"}}'
//	curl -s localhost:8080/v1/stats
//
// With no credentials at hand it talks to local fakes of APNs, SMTP and
// Twilio (the -demo default); a real deployment builds apns.New, smtp.New
// and twilio.New from its secrets in providers() instead.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/sms/twilio"
	"github.com/heraldhq/herald/tracking"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	dbPath := flag.String("db", filepath.Join(os.TempDir(), "herald-service.db"), "the store file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *addr, *dbPath); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, dbPath string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	tb := &exampletb.TB{}
	defer tb.Done()
	db, err := embedded.Open(dbPath, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	svc, err := newService(tb, db, log)
	if err != nil {
		return err
	}
	if err := svc.d.Start(ctx); err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: svc.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("listening", "addr", addr, "store", dbPath)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = svc.d.Stop(sctx) // unsent messages stay in the store for the next start
	return svc.outbox.Close(sctx)
}

type service struct {
	d      *herald.Dispatcher
	outbox *tracking.Outbox
}

// providers returns the senders. Here: herald's real clients pointed at
// local fakes; in production, the same clients built from credentials.
func providers(tb *exampletb.TB) (map[push.Provider]push.Sender, email.Sender, sms.Sender, error) {
	fakeAPNs := pushtest.NewAPNs(tb, &pushtest.APNsOptions{Topics: []string{"com.example.app"}})
	ac, err := apns.New(fakeAPNs.Configure(&apns.Config{Topic: "com.example.app"}))
	if err != nil {
		return nil, nil, nil, err
	}
	tb.Cleanup(ac.CloseIdleConnections)
	es, err := smtp.New(emailtest.NewServer(tb, nil).Configure(&smtp.Config{}))
	if err != nil {
		return nil, nil, nil, err
	}
	tb.Cleanup(func() { _ = es.Close() })
	ss, err := twilio.New(smstest.NewServer(tb).Configure(&twilio.Config{}))
	if err != nil {
		return nil, nil, nil, err
	}
	return map[push.Provider]push.Sender{push.APNs: ac}, es, ss, nil
}

func newService(tb *exampletb.TB, db *embedded.DB, log *slog.Logger) (*service, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pushers, mailer, texter, err := providers(tb)
	if err != nil {
		return nil, err
	}
	outbox, err := tracking.NewOutbox(db.Tracking(), &tracking.OutboxConfig{
		Sinks: []tracking.Sink{&tracking.SlogSink{Logger: log}}, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	limiter, err := capping.New(db.Capping(), &capping.Config{
		Rules:      []capping.Rule{{Name: "marketing-daily", Kind: capping.Global, Limit: 3, Window: capping.Calendar(capping.Day)}},
		QuietHours: &capping.QuietHours{Start: "22:00", End: "08:00"},
		Logger:     log,
	})
	if err != nil {
		return nil, err
	}
	d, err := herald.New(&herald.Config{
		Store: db.Retry(), Push: pushers, Email: mailer, SMS: texter,
		Limiter: limiter, Tracker: outbox, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	return &service{d: d, outbox: outbox}, nil
}

func (s *service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages", s.send)
	mux.Handle("POST /v1/events", tracking.IngestHandler(s.outbox, nil))
	mux.HandleFunc("GET /v1/stats", s.stats)
	return mux
}

// send answers 202 once the message is durable; 400 naming the field of a
// bad message; 503 with Retry-After when the store refused it, so the
// client retries with the same idempotency key.
func (s *service) send(w http.ResponseWriter, r *http.Request) {
	var m herald.Message
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": "body is not a message: " + err.Error()})
		return
	}
	res, err := s.d.Send(r.Context(), m)
	var fe *herald.FieldError
	switch {
	case errors.As(err, &fe):
		reply(w, http.StatusBadRequest, map[string]string{"error": fe.Error(), "field": fe.Field})
	case err != nil:
		w.Header().Set("Retry-After", "5")
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "not accepted; retry with the same IdempotencyKey"})
	default:
		reply(w, http.StatusAccepted, res)
	}
}

func (s *service) stats(w http.ResponseWriter, r *http.Request) {
	lanes, err := s.d.Queue().Stats(r.Context())
	if err != nil {
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "store unavailable"})
		return
	}
	circuits := map[string]bool{}
	for _, route := range []string{"apns", "email", "sms"} {
		circuits[route] = s.d.CircuitOpen(route)
	}
	reply(w, http.StatusOK, map[string]any{"lanes": lanes, "circuit_open": circuits})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
