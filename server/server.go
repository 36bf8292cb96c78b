// Package server is heraldd: a notification service built from a config
// file (real providers, several apps each, the store of your choice), its
// HTTP API (messages, events, the Inbox and in-app client API), operations
// endpoints (/healthz, /readyz, /metrics), an admin API and an operator
// console. cmd/heraldd runs it.
package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/campaign"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// Server is a running heraldd.
type Server struct {
	cfg       *Config
	log       *slog.Logger
	st        *stores
	d         *herald.Dispatcher
	outbox    *tracking.Outbox
	limiter   *capping.Limiter
	keys      map[string]*APIKey // by SHA-256 hex
	tokens    *inbox.Tokens
	notifier  *inbox.Notifier
	metrics   *metrics
	console   *console
	campaigns *campaign.Runner
	// runs are the campaigns this process is fanning out, by key.
	runMu   sync.Mutex
	runs    map[string]context.CancelFunc
	runCtx  context.Context
	rescan  sync.WaitGroup // the loops that resume campaigns and sample the store's load
	load    loadSamples
	started time.Time
	// lastProgress is when a worker last finished an attempt (unix nanos).
	lastProgress atomic.Int64
	handler      http.Handler
	closeOnce    sync.Once
	closed       chan struct{}
}

// NewLogger returns the configured logger on w.
func NewLogger(c *LogConfig, w *os.File) *slog.Logger {
	lvl := map[string]slog.Level{"debug": slog.LevelDebug, "warn": slog.LevelWarn, "error": slog.LevelError}[c.Level]
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// New builds a server from a checked config: it opens the store (running
// PostgreSQL's migrations), builds every provider's client and the
// Dispatcher. Start runs the workers; Handler serves HTTP.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, log: log, keys: map[string]*APIKey{}, notifier: &inbox.Notifier{}, started: time.Now(),
		load: loadSamples{window: loadWindow}}
	s.lastProgress.Store(time.Now().UnixNano())
	for i := range cfg.APIKeys {
		s.keys[strings.ToLower(cfg.APIKeys[i].SHA256)] = &cfg.APIKeys[i]
	}
	apps, err := cfg.senders(ctx, log)
	if err != nil {
		return nil, err
	}
	s.st, err = openStores(ctx, &cfg.Store, log)
	if err != nil {
		return nil, err
	}
	if s.st.file != nil {
		s.load.add(time.Now(), s.st.file.WriteStats())
	}
	s.metrics = newMetrics(s)
	s.outbox, err = tracking.NewOutbox(s.st.tracking, &tracking.OutboxConfig{Sinks: append(cfg.sinks(log), s.metrics.sink()), Logger: log})
	if err != nil {
		_ = s.st.Close()
		return nil, err
	}
	s.limiter, err = cfg.limiter(s.st.capping, log)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("capping: %w", err)
	}
	hc := &herald.Config{
		Store: s.st.retry, Limiter: s.limiter, DeferCapped: cfg.Capping.Defer, Tracker: s.outbox,
		Inbox: s.st.inbox, Notifier: s.notifier, Logger: log, Eligibility: s.st.eligibility,
		// A cancelled campaign's waiting messages are refused at send time.
		Eligible:      func(ctx context.Context, m *herald.Message) (bool, string) { return s.campaigns.Eligible(ctx, m) },
		Transactional: laneConfig(cfg.Lanes.Transactional), Campaign: laneConfig(cfg.Lanes.Campaign),
		DefaultTTL: time.Duration(cfg.Messages.DefaultTTL),
		Queue: retry.Config{Observer: s.observe, CompletedRetention: time.Duration(cfg.Messages.Retention),
			KeyRetention: time.Duration(cfg.Messages.Retention)},
		Apps: map[string]herald.Senders{},
	}
	for name, a := range apps {
		if name == "" {
			hc.Push, hc.Email, hc.SMS = a.Push, a.Email, a.SMS
		} else {
			hc.Apps[name] = *a
		}
	}
	if s.d, err = herald.New(hc); err != nil {
		s.closeStores()
		return nil, err
	}
	// The same host and address after a restart is the same owner: it
	// takes its campaigns' leases back at once.
	host, _ := os.Hostname()
	s.campaigns, err = campaign.New(&campaign.Config{Dispatcher: s.d, Store: s.st.checkpoints,
		StoredAudiences: s.st.audiences, Logger: log, Owner: "heraldd@" + host + "/" + cfg.Listen})
	if err != nil {
		s.closeStores()
		return nil, err
	}
	s.runs, s.runCtx, s.closed = map[string]context.CancelFunc{}, context.Background(), make(chan struct{})
	if cfg.Inbox.TokenKey != "" {
		key, _ := ResolveSecret(cfg.Inbox.TokenKey)
		s.tokens = &inbox.Tokens{Key: key, TTL: cmp.Or(time.Duration(cfg.Inbox.TokenTTL), time.Hour)}
	}
	s.console = newConsole(s)
	s.handler = s.routes()
	return s, nil
}

func (s *Server) closeStores() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.outbox != nil {
		_ = s.outbox.Close(ctx)
	}
	_ = s.st.Close()
}

// observe notes workers' progress for /readyz.
func (s *Server) observe(e retry.Event) {
	if e.Type != retry.EventEnqueued {
		s.lastProgress.Store(time.Now().UnixNano())
	}
}

// Dispatcher returns the server's Dispatcher.
func (s *Server) Dispatcher() *herald.Dispatcher { return s.d }

// Start runs the workers until Close, and fans out again every campaign
// the last process left running (a restart or a crash mid-campaign):
// each resumes from its checkpoint.
func (s *Server) Start(ctx context.Context) error {
	s.runMu.Lock()
	s.runCtx = ctx
	s.runMu.Unlock()
	if err := s.d.Start(ctx); err != nil {
		return err
	}
	s.sampleLoad(loadEvery)
	if s.cfg.Role == RoleTransactional {
		return nil // campaigns are the marketing instance's
	}
	if err := s.resumeCampaigns(ctx); err != nil {
		return err
	}
	// Again every lease period: a campaign whose runner (another
	// heraldd on the same database) died is taken over once its lease
	// lapses.
	s.rescan.Add(1)
	go func() {
		defer s.rescan.Done()
		t := time.NewTicker(resumeEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.closed:
				return
			case <-t.C:
				if err := s.resumeCampaigns(ctx); err != nil {
					s.log.Warn("heraldd: campaigns to resume", "err", err)
				}
			}
		}
	}()
	return nil
}

// resumeEvery is how often heraldd looks for running campaigns no one runs.
const resumeEvery = 30 * time.Second

// resumeCampaigns runs every campaign in the running state.
func (s *Server) resumeCampaigns(ctx context.Context) error {
	const page = 100
	for after := ""; ; {
		cs, err := s.campaigns.List(ctx, after, page)
		if err != nil {
			return fmt.Errorf("heraldd: campaigns to resume: %w", err)
		}
		for _, c := range cs {
			if c.State == campaign.Running && s.run(c.Campaign.Key) {
				s.log.Debug("heraldd: campaign run started (it runs unless another process holds its lease)", "campaign", c.Campaign.Key)
			}
		}
		if len(cs) < page {
			return nil
		}
		after = cs[len(cs)-1].Campaign.Key
	}
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops the workers (in-flight messages finish within ctx, the rest
// stay in the store), flushes tracking and closes the store.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		s.rescan.Wait()
		s.stopRuns()
		err = s.d.Stop(ctx)
		s.closeStores()
	})
	return err
}

// Serve listens on the configured address until ctx ends, then shuts
// down gracefully: it stops accepting, lets requests in flight finish,
// stops the workers (messages in flight finish, the rest stay in the
// store for the next start) and closes the store.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		WriteTimeout: 10 * time.Minute, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	s.log.Info("heraldd: shutting down: no new requests; finishing those in flight")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	err := s.Close(sctx)
	s.log.Info("heraldd: stopped")
	return err
}

// route is one served route: the OpenAPI document lists exactly these.
type route struct {
	method, path string
	scope        string // the API key scope it needs; "" for none
	h            http.HandlerFunc
}

func (s *Server) apiRoutes() []route {
	rs := []route{
		{"POST", "/v1/messages", "send", s.sendMessage},
		{"GET", "/v1/messages", "read", s.messageByKey},
		{"GET", "/v1/messages/{id}", "read", s.messageByID},
		{"POST", "/v1/events", "events", s.ingest().ServeHTTP},
		{"POST", "/v1/audiences/{name}/members", "send", s.marketingOnly(s.uploadMembers)},
		{"POST", "/v1/audiences/{name}/remove", "send", s.marketingOnly(s.removeMembers)},
		{"GET", "/v1/audiences/{name}", "read", s.marketingOnly(s.audienceSize)},
		{"POST", "/v1/campaigns", "send", s.marketingOnly(s.createCampaign)},
		{"GET", "/v1/campaigns", "read", s.marketingOnly(s.listCampaigns)},
		{"GET", "/v1/campaigns/{key}", "read", s.marketingOnly(s.campaignProgress)},
		{"POST", "/v1/campaigns/{key}/{action}", "send", s.marketingOnly(s.campaignAction)},
		{"POST", "/v1/suppressions", "send", s.suppress},
		{"POST", "/v1/suppressions/check", "read", s.checkSuppression},
		{"POST", "/v1/suppressions/remove", "admin", s.unsuppress},
		{"PUT", "/v1/users/{user}/preferences", "send", s.setPreference},
		{"GET", "/v1/admin/lanes", "admin", s.adminLanes},
		{"POST", "/v1/admin/lanes/{lane}/pause", "admin", s.adminPause},
		{"POST", "/v1/admin/lanes/{lane}/resume", "admin", s.adminResume},
		{"GET", "/v1/admin/circuits", "admin", s.adminCircuits},
		{"GET", "/v1/admin/dead", "admin", s.adminDead},
		{"POST", "/v1/admin/dead/requeue", "admin", s.adminRequeueMatching},
		{"POST", "/v1/admin/dead/purge", "admin", s.adminPurge},
		{"POST", "/v1/admin/dead/{id}/requeue", "admin", s.adminRequeue},
		{"GET", "/v1/admin/users/{user}/capping", "admin", s.adminCapping},
		{"GET", "/v1/admin/tracking", "admin", s.adminTracking},
		{"GET", "/v1/admin/store", "admin", s.adminStore},
		{"GET", "/healthz", "", s.healthz},
		{"GET", "/readyz", "", s.readyz},
		{"GET", "/metrics", "", s.metrics.handler().ServeHTTP},
	}
	if s.tokens != nil {
		rs = append(rs, route{"POST", "/v1/inbox/tokens", "send", s.inboxToken})
	}
	return rs
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.apiRoutes() {
		h := r.h
		if r.scope != "" {
			h = s.auth(r.scope, h)
		}
		mux.Handle(r.method+" "+r.path, s.metrics.instrument(r.method+" "+r.path, h))
	}
	if s.tokens != nil {
		api := inbox.Handler(&inbox.HandlerConfig{Store: s.st.inbox, Tokens: s.tokens, AllowedOrigins: s.cfg.Inbox.Origins,
			InApp: s.d, Events: s.outbox, Notifier: s.notifier, Logger: s.log})
		mux.Handle("/v1/inbox/", s.metrics.instrument("/v1/inbox/", http.StripPrefix("/v1/inbox", api)))
	}
	s.console.mount(mux)
	return mux
}

// Errors as JSON: {"error": "...", "field": "..."}.
func fail(w http.ResponseWriter, status int, msg, field string) {
	body := map[string]string{"error": msg}
	if field != "" {
		body["field"] = field
	}
	reply(w, status, body)
}

// keyOf returns the API key a request carries, or nil.
func (s *Server) keyOf(r *http.Request) *APIKey {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(tok))
	return s.keys[hex.EncodeToString(sum[:])]
}

// auth wants an API key with scope: 401 without a known key, 403 without
// the scope.
func (s *Server) auth(scope string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		k := s.keyOf(r)
		switch {
		case k == nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="heraldd"`)
			fail(w, http.StatusUnauthorized, "missing or unknown API key (Authorization: Bearer <key>)", "")
		case !k.hasScope(scope):
			s.log.Warn("heraldd: API key lacks a scope", "key", keyName(k), "scope", scope, "path", r.URL.Path)
			fail(w, http.StatusForbidden, fmt.Sprintf("this key has no %q scope", scope), "")
		default:
			next(w, r)
		}
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	reply(w, http.StatusOK, map[string]string{"status": "alive"})
}

// readyz: the store answers, no lane's oldest due message is older than
// ready.max_lag, and workers made progress within ready.max_stall while
// messages were due.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	stats, err := s.d.Queue().Stats(ctx)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unreachable", "")
		return
	}
	var problems []string
	due := 0
	for _, l := range stats {
		if l.Paused {
			continue
		}
		due += l.Ready
		if lag := time.Duration(s.cfg.Ready.MaxLag); lag > 0 && l.OldestReady > lag {
			problems = append(problems, fmt.Sprintf("lane %s: oldest due message waited %s (max_lag %s)", l.Lane, l.OldestReady.Round(time.Second), lag))
		}
	}
	stall := cmp.Or(time.Duration(s.cfg.Ready.MaxStall), time.Minute)
	if idle := time.Since(time.Unix(0, s.lastProgress.Load())); due > 0 && idle > stall {
		problems = append(problems, fmt.Sprintf("%d messages due and no attempt finished for %s (max_stall %s)", due, idle.Round(time.Second), stall))
	}
	if len(problems) > 0 {
		reply(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
		return
	}
	reply(w, http.StatusOK, map[string]string{"status": "ready"})
}

var errNoKeyFinder = errors.New("this store cannot find messages by key")
