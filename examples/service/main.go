// Command service is a notification service built on herald, the shape a
// host application takes: an HTTP API that accepts messages (202 only once
// they are durable), takes client engagement events, and reports the
// queue and the providers' circuits. It runs on the embedded store.
//
//	HERALD_API_KEY=dev-key go run ./examples/service -addr 127.0.0.1:8080
//	curl -s localhost:8080/v1/messages -H 'Authorization: Bearer dev-key' -H 'Content-Type: application/json' \
//	  -d '{"IdempotencyKey":"order-42","User":"u1","Transactional":true,
//	  "Email":{"From":"shop@example.com","To":["ada@example.com"],"Subject":"Shipped","Text":"On its way"}}'
//	curl -s localhost:8080/v1/stats -H 'Authorization: Bearer dev-key'
//
// Every route wants the API key (HERALD_API_KEY) as a bearer token; the
// events route has its own (HERALD_EVENTS_KEY, for client apps), and
// without one it shares the API key. Bodies must be JSON
// (Content-Type: application/json, so no web page can post to it with a
// simple form or text/plain request), at most 1 MiB (413 past it), one
// object with known fields and nothing after it (400 naming what is
// wrong). Slow bodies and idle connections are cut off by the server's
// timeouts.
//
// It talks to local fakes of APNs, SMTP and Twilio, wired to herald's
// real clients; a real deployment builds apns.New, smtp.New and
// twilio.New from its secrets in providers() instead (cmd/heraldd, when
// it exists, does that from a config file).
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
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
	"github.com/heraldhq/herald/secret"
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
	keys, err := keysFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(2)
	}
	if err := run(ctx, *addr, *dbPath, keys); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

// keys are the service's bearer tokens.
type keys struct {
	API, Events secret.Value
}

func keysFromEnv() (keys, error) {
	api, err := secret.FromEnv("HERALD_API_KEY")
	if err != nil {
		return keys{}, fmt.Errorf("%w: every route needs an API key", err)
	}
	k := keys{API: api, Events: api}
	if ev, err := secret.FromEnv("HERALD_EVENTS_KEY"); err == nil {
		k.Events = ev
	}
	return k, nil
}

func run(ctx context.Context, addr, dbPath string, k keys) error {
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
	svc.keys = k
	if err := svc.d.Start(ctx); err != nil {
		return err
	}
	srv := newServer(addr, svc.routes())
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
	keys   keys
}

// maxBody caps a request body.
const maxBody = 1 << 20

// newServer bounds every phase of a connection: a client that trickles
// its headers or body, or keeps a connection idle, is cut off instead of
// holding a goroutine and a socket forever.
func newServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}

// providers returns the senders. Here: herald's real clients pointed at
// local fakes; in production, the same clients built from credentials.
func providers(tb *exampletb.TB) (map[push.Provider]push.Sender, email.Sender, sms.Sender, error) {
	fakeAPNs := pushtest.NewAPNs(tb, &pushtest.APNsOptions{Topics: []string{"com.example.app"}})
	ac, err := apns.New((&apns.Config{Topic: "com.example.app"}).UseFake(fakeAPNs))
	if err != nil {
		return nil, nil, nil, err
	}
	tb.Cleanup(ac.CloseIdleConnections)
	es, err := smtp.New((&smtp.Config{}).UseFake(emailtest.NewServer(tb, nil)))
	if err != nil {
		return nil, nil, nil, err
	}
	tb.Cleanup(func() { _ = es.Close() })
	ss, err := twilio.New((&twilio.Config{}).UseFake(smstest.NewServer(tb)))
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
	mux.Handle("POST /v1/messages", s.auth(s.keys.API, jsonBody(http.HandlerFunc(s.send))))
	// The events route checks its own key (client apps hold it, not the
	// API key), its body size and content type itself.
	mux.Handle("POST /v1/events", jsonBody(tracking.IngestHandler(s.outbox, &tracking.IngestConfig{Token: s.keys.Events, MaxBody: maxBody})))
	mux.Handle("GET /v1/stats", s.auth(s.keys.API, http.HandlerFunc(s.stats)))
	return mux
}

// auth requires "Authorization: Bearer <key>", compared in constant time.
func (s *service) auth(key secret.Value, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if key.IsZero() || !ok || subtle.ConstantTimeCompare([]byte(got), key.Bytes()) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
			reply(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong API key (Authorization: Bearer <key>)"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// jsonBody refuses a body that is not declared JSON (415): a browser
// sends text/plain and form bodies across origins without asking, JSON
// only after a CORS preflight this service never grants.
func jsonBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			reply(w, http.StatusUnsupportedMediaType, map[string]string{"error": "Content-Type must be application/json"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// decode reads exactly one JSON value of known fields into v, at most
// maxBody bytes. It answers the error itself and reports whether v is set.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			reply(w, http.StatusBadRequest, map[string]string{"error": "trailing data after the JSON object"})
			return false
		}
		return true
	}
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var ue *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		reply(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("body over %d bytes", mbe.Limit)})
	case errors.As(err, &se):
		reply(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("malformed JSON at byte %d", se.Offset)})
	case errors.As(err, &ue):
		reply(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("field %s: want a %s", ue.Field, ue.Type), "field": ue.Field})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		reply(w, http.StatusBadRequest, map[string]string{"error": "unknown field " + strconv.Quote(field), "field": field})
	case errors.Is(err, io.EOF):
		reply(w, http.StatusBadRequest, map[string]string{"error": "empty body"})
	default:
		reply(w, http.StatusBadRequest, map[string]string{"error": "body is not a message"})
	}
	return false
}

// send answers 202 once the message is durable; 400 naming the field of a
// bad message; 409 for an idempotency key already used for another
// message; 503 with Retry-After when the store refused it, so the client
// retries with the same idempotency key.
func (s *service) send(w http.ResponseWriter, r *http.Request) {
	var m herald.Message
	if !decode(w, r, &m) {
		return
	}
	res, err := s.d.Send(r.Context(), m)
	var fe *herald.FieldError
	var ce *herald.ConflictError
	switch {
	case errors.As(err, &fe):
		reply(w, http.StatusBadRequest, map[string]string{"error": fe.Error(), "field": fe.Field})
	case errors.As(err, &ce):
		reply(w, http.StatusConflict, map[string]string{"error": ce.Error(), "field": ce.Field})
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
