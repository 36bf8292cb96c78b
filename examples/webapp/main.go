// Command webapp is a page on herald's web SDK (sdk/web) and client API
// (inbox.Handler), served by a host application on the embedded store: a
// user's Inbox with its unread badge kept live by the stream, an in-app
// message decided at display time, and events and attribute updates sent
// as the user clicks, journaled in the browser until the server has them.
//
//	go run ./examples/webapp        # then open http://127.0.0.1:8090/?user=ada
//
// The host's side is what a real one does: its backend signs each
// user's token (/token here signs for any user name: there is no login in
// an example), mounts the client API under /inbox/, keeps its users'
// attributes from the attribute updates its sink receives, and refuses an
// upsell to users already on the pro plan at display time.
//
// -test-control adds /test/ routes for the browser tests: make event
// ingest answer an error status, read the journal, send an in-app
// message.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/tracking"
)

//go:embed static
var static embed.FS

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address (port 0: any free port)")
	dbPath := flag.String("db", "", "the store file (default: one in a new temporary directory)")
	testControl := flag.Bool("test-control", false, "serve the /test/ routes the browser tests use")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dbPath == "" {
		dir, err := os.MkdirTemp("", "herald-webapp-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "webapp:", err)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
		*dbPath = filepath.Join(dir, "herald.db")
	}
	if err := run(ctx, *addr, *dbPath, *testControl); err != nil {
		fmt.Fprintln(os.Stderr, "webapp:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, dbPath string, testControl bool) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := embedded.Open(dbPath, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	a, err := newApp(ctx, db, log)
	if err != nil {
		return err
	}
	if err := a.d.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.routes(testControl), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("webapp: listening on http://%s/?user=ada\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.d.Stop(sctx)
	return a.outbox.Close(sctx)
}

// app is the host application.
type app struct {
	db       *embedded.DB
	d        *herald.Dispatcher
	outbox   *tracking.Outbox
	tokens   *inbox.Tokens
	notifier *inbox.Notifier
	attrs    *attributes
	log      *slog.Logger
	// For the browser tests: the status event ingest answers (0: the real
	// handler), and the events that reached it, by ID.
	fault    atomic.Int32
	refused  atomic.Int64 // events in requests answered with the fault
	mu       sync.Mutex
	received map[string]int
}

// attributes are the users' properties as the host's targeting reads
// them, kept from the attribute updates the outbox hands its sink.
type attributes struct {
	mu sync.Mutex
	m  map[string]map[string]any
}

func (s *attributes) Name() string { return "attributes" }

func (s *attributes) Write(_ context.Context, events []tracking.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range events {
		if e.Type != tracking.Attributes {
			continue
		}
		if s.m[e.User] == nil {
			s.m[e.User] = map[string]any{}
		}
		for k, v := range e.Props {
			s.m[e.User][k] = v
		}
	}
	return nil
}

func (s *attributes) get(user, k string) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[user][k]
}

func newApp(ctx context.Context, db *embedded.DB, log *slog.Logger) (*app, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	key := secret.New(b)
	a := &app{db: db, log: log, notifier: &inbox.Notifier{}, attrs: &attributes{m: map[string]map[string]any{}},
		tokens: &inbox.Tokens{Key: key, TTL: 15 * time.Minute}, received: map[string]int{}}
	// The attributes of earlier runs, from the journal.
	if err := a.replayAttributes(ctx); err != nil {
		return nil, err
	}
	var err error
	a.outbox, err = tracking.NewOutbox(db.Tracking(), &tracking.OutboxConfig{Sinks: []tracking.Sink{a.attrs},
		PollInterval: 20 * time.Millisecond, Logger: log})
	if err != nil {
		return nil, err
	}
	limiter, err := capping.New(db.Capping(), &capping.Config{Rules: []capping.Rule{
		{Name: "three-a-day", Kind: capping.Global, Limit: 3, Window: capping.Calendar(capping.Day)}}})
	if err != nil {
		return nil, err
	}
	a.d, err = herald.New(&herald.Config{
		Store: db.Retry(), Inbox: db.Inbox(), Eligibility: db.Eligibility(), Limiter: limiter,
		Tracker: a.outbox, Notifier: a.notifier, Logger: log,
		// The page has no push; a recorder stands in for a provider.
		Push: map[push.Provider]push.Sender{push.WebPush: pushtest.NewRecorder(push.WebPush)},
		Eligible: func(_ context.Context, m *herald.Message) (bool, string) {
			if m.Category == "upsell" && a.attrs.get(m.User, "plan") == "pro" {
				return false, "already on the pro plan"
			}
			return true, ""
		},
	})
	return a, err
}

func (a *app) replayAttributes(ctx context.Context) error {
	var after int64
	for {
		recs, err := a.db.Tracking().Read(ctx, after, 1000)
		if err != nil || len(recs) == 0 {
			return err
		}
		evs := make([]tracking.Event, len(recs))
		for i, r := range recs {
			evs[i] = r.Event
		}
		_ = a.attrs.Write(ctx, evs)
		after = recs[len(recs)-1].Seq
	}
}

func (a *app) routes(testControl bool) http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	mux.Handle("/", http.FileServerFS(sub))
	mux.HandleFunc("GET /token", a.token)
	mux.HandleFunc("POST /demo/notify", a.notify)
	api := inbox.Handler(&inbox.HandlerConfig{Store: a.db.Inbox(), Tokens: a.tokens, InApp: a.d, Events: a.outbox,
		Notifier: a.notifier, PollInterval: 2 * time.Second, Logger: a.log})
	mux.Handle("/inbox/", http.StripPrefix("/inbox", a.faults(api)))
	if testControl {
		mux.HandleFunc("POST /test/ingest", a.setFault)
		mux.HandleFunc("GET /test/journal", a.journal)
		mux.HandleFunc("POST /test/inapp", a.sendInApp)
	}
	return mux
}

var userName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// token is the host backend's: it signs a token for the logged-in user
// (any name here) and makes sure the user has a welcome.
func (a *app) token(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if !userName.MatchString(user) {
		http.Error(w, "user: 1 to 64 letters, digits, - or _", http.StatusBadRequest)
		return
	}
	if err := a.welcome(r.Context(), user); err != nil {
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": a.tokens.Sign(user, time.Now())})
}

// welcome sends a new user's first Inbox items and an in-app upsell
// (keys derived from the user: sent once however often this runs).
func (a *app) welcome(ctx context.Context, user string) error {
	note := func(key, title, body string) herald.Message {
		return herald.Message{IdempotencyKey: key + "/" + user, User: user, Transactional: true,
			Inbox: &herald.InboxItem{Title: title, Body: body}}
	}
	_, err := a.d.SendBatch(ctx, []herald.Message{
		note("welcome", "Welcome to Acme", "Your account is ready. Tap around: every click is an event."),
		note("order-1042", "Order #1042 shipped", "It is on its way and should arrive on Thursday."),
		note("security", "New sign-in", "A new browser signed in to your account."),
		upsell("upsell/"+user, user),
	})
	return err
}

func upsell(key, user string) herald.Message {
	return herald.Message{IdempotencyKey: key, User: user, Category: "upsell", TTL: 24 * time.Hour,
		InApp: &herald.InAppMessage{Title: "Go Pro", Body: "Unlimited projects and priority support. First month free.",
			Data: map[string]string{"cta": "Upgrade", "layout": "modal"}}}
}

func (a *app) user(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	u, err := a.tokens.Check(tok, time.Now())
	if err != nil {
		http.Error(w, "user token not valid", http.StatusUnauthorized)
		return "", false
	}
	return u, true
}

// notify stands in for the host's business events: a new Inbox item.
func (a *app) notify(w http.ResponseWriter, r *http.Request) {
	u, ok := a.user(w, r)
	if !ok {
		return
	}
	n := time.Now()
	_, err := a.d.Send(r.Context(), herald.Message{IdempotencyKey: "demo/" + u + "/" + strconv.FormatInt(n.UnixNano(), 10),
		User: u, Transactional: true, Inbox: &herald.InboxItem{Title: "Your report is ready", Body: "Generated at " + n.Format("15:04:05") + "."}})
	if err != nil {
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// faults answers event ingest with the configured status (browser tests)
// and counts the events that reach the real handler.
func (a *app) faults(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/events" {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		var batch struct {
			Events []struct {
				ID string `json:"id"`
			} `json:"events"`
		}
		_ = json.Unmarshal(body, &batch)
		if s := a.fault.Load(); s != 0 {
			a.refused.Add(int64(len(batch.Events)))
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"unavailable"}`, int(s))
			return
		}
		a.mu.Lock()
		for _, e := range batch.Events {
			a.received[e.ID]++
		}
		a.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

func (a *app) setFault(w http.ResponseWriter, r *http.Request) {
	s, err := strconv.Atoi(r.URL.Query().Get("status"))
	if err != nil || (s != 0 && (s < 400 || s > 599)) {
		http.Error(w, "status: 0 or 400-599", http.StatusBadRequest)
		return
	}
	a.fault.Store(int32(s))
	w.WriteHeader(http.StatusNoContent)
}

// journal reports a user's custom events in the journal, and what reached
// the ingest handler.
func (a *app) journal(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	type ev struct {
		ID    string         `json:"id"`
		Name  string         `json:"name"`
		Props map[string]any `json:"props"`
	}
	type outcome struct {
		MessageID string `json:"message_id"`
		Type      string `json:"type"`
		Reason    string `json:"reason,omitempty"`
	}
	out := struct {
		Events     []ev           `json:"events"`     // the user's custom events
		Outcomes   []outcome      `json:"outcomes"`   // the user's other events
		Attributes map[string]any `json:"attributes"` // as the host's targeting sees them
		Received   int            `json:"received"`   // events that reached the handler, repeats included
		Distinct   int            `json:"distinct"`   // distinct IDs among them
		Refused    int64          `json:"refused"`    // events in requests answered with the fault
	}{Refused: a.refused.Load(), Events: []ev{}, Outcomes: []outcome{}, Attributes: map[string]any{}}
	var after int64
	for {
		recs, err := a.db.Tracking().Read(r.Context(), after, 1000)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			switch e := rec.Event; {
			case e.User != user:
			case e.Type == tracking.Custom:
				out.Events = append(out.Events, ev{e.ID, e.Name, e.Props})
			default:
				out.Outcomes = append(out.Outcomes, outcome{e.MessageID, string(e.Type), e.Reason})
			}
		}
		after = recs[len(recs)-1].Seq
	}
	a.attrs.mu.Lock()
	for k, v := range a.attrs.m[user] {
		out.Attributes[k] = v
	}
	a.attrs.mu.Unlock()
	a.mu.Lock()
	for _, n := range a.received {
		out.Received += n
		out.Distinct++
	}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (a *app) sendInApp(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if _, err := a.d.Send(r.Context(), upsell(q.Get("key"), q.Get("user"))); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
