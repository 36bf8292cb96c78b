package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/audience"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/postgres"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/fcm"
	"github.com/heraldhq/herald/push/webpush"
	"github.com/heraldhq/herald/redisstore"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/sms/twilio"
	"github.com/heraldhq/herald/tracking"
)

// stores are what one store kind provides.
type stores struct {
	retry       retry.Store
	capping     capping.Store
	tracking    tracking.Store
	inbox       inbox.Store
	audiences   audience.Store
	checkpoints checkpoint.Store
	eligibility eligibility.Store
	// file is the embedded store's file when one is open (the embedded
	// store, or Redis's tracking journal), for its writer's metrics.
	file *embedded.DB
	// holds is what the file holds: "store" (everything) or "journal"
	// (Redis's tracking journal).
	holds   string
	closers []io.Closer
}

func (s *stores) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i].Close())
	}
	return errors.Join(errs...)
}

type closerFunc func() error

func (f closerFunc) Close() error { f(); return nil }

// openStores opens the configured store. migrate runs PostgreSQL's
// migrations first (heraldd migrate; serve does it too).
func openStores(ctx context.Context, c *Store, log *slog.Logger) (*stores, error) {
	switch c.Kind {
	case "postgres":
		url, err := ResolveSecret(c.URL)
		if err != nil {
			return nil, fmt.Errorf("store.url: %w", err)
		}
		pool, err := pgxpool.New(ctx, url.Reveal())
		if err != nil {
			return nil, fmt.Errorf("store.url: %w", errors.New("not a PostgreSQL connection string")) // the URL holds a password: not repeated
		}
		db, err := postgres.New(pool, &postgres.Config{Schema: c.Schema})
		if err != nil {
			pool.Close()
			return nil, err
		}
		if err := db.Migrate(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres: migrate: %w", err)
		}
		return &stores{retry: db.Retry(), capping: db.Capping(), tracking: db.Tracking(), inbox: db.Inbox(),
			audiences: db.Audiences(), checkpoints: db.Checkpoints(), eligibility: db.Eligibility(),
			closers: []io.Closer{closerFunc(func() error { pool.Close(); return nil })}}, nil
	case "redis":
		pw, _ := ResolveSecret(c.Password)
		opts := &redis.Options{Addr: c.Addr}
		if !pw.IsZero() {
			opts.Password = pw.Reveal()
		}
		rdb := redis.NewClient(opts)
		rs, err := redisstore.New(ctx, rdb, &redisstore.Config{Logger: log})
		if err != nil {
			_ = rdb.Close()
			return nil, err
		}
		// Redis keeps the queue, caps and Inbox; the tracking journal is
		// the embedded file's (Redis has no journal store).
		db, err := embedded.Open(c.Path, nil)
		if err != nil {
			_ = rs.Close()
			return nil, err
		}
		return &stores{retry: rs, capping: rs.Capping(), tracking: db.Tracking(), inbox: rs.Inbox(),
			audiences: rs.Audiences(), checkpoints: rs.Checkpoints(), eligibility: rs.Eligibility(), file: db, holds: "journal", closers: []io.Closer{rs, db}}, nil
	}
	db, err := embedded.Open(c.Path, nil)
	if err != nil {
		return nil, err
	}
	st := &stores{retry: db.Retry(), capping: db.Capping(), tracking: db.Tracking(), inbox: db.Inbox(), eligibility: db.Eligibility(),
		audiences: db.Audiences(), checkpoints: db.Checkpoints(), file: db, holds: "store", closers: []io.Closer{db}}
	if c.EligibilityPath != "" {
		f, err := embedded.OpenEligibility(c.EligibilityPath)
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("store.eligibility_path: %w", err)
		}
		st.eligibility = f
		st.closers = append(st.closers, f)
	}
	return st, nil
}

// tlsWith returns a TLS config trusting the system's roots and caFile's.
func tlsWith(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// senders builds every configured provider's clients, by app.
func (c *Config) senders(ctx context.Context, log *slog.Logger) (map[string]*herald.Senders, error) {
	apps := map[string]*herald.Senders{}
	app := func(name string) *herald.Senders {
		if apps[name] == nil {
			apps[name] = &herald.Senders{Push: map[push.Provider]push.Sender{}}
		}
		return apps[name]
	}
	for i, a := range c.APNs {
		tc, err := tlsWith(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("apns[%d].ca_file: %w", i, err)
		}
		ac := &apns.Config{Topic: a.Topic, Production: a.Environment != "development", Host: a.Host, TLSConfig: tc, Logger: log}
		if a.CertificateFile != "" {
			pem, err := os.ReadFile(a.CertificateFile)
			if err != nil {
				return nil, fmt.Errorf("apns[%d].certificate_file: %w", i, err)
			}
			cert, err := tls.X509KeyPair(pem, pem)
			if err != nil {
				return nil, fmt.Errorf("apns[%d].certificate_file: not a PEM certificate with its key", i)
			}
			ac.Certificate = secret.Seal(&cert)
		} else {
			key, err := secret.FromFile(a.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("apns[%d].key_file: cannot read it", i)
			}
			ac.AuthKey, ac.KeyID, ac.TeamID = key, a.KeyID, a.TeamID
		}
		cl, err := apns.New(ac)
		if err != nil {
			return nil, fmt.Errorf("apns[%d]: %w", i, err)
		}
		app(a.App).Push[push.APNs] = cl
	}
	for i, a := range c.FCM {
		tc, err := tlsWith(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fcm[%d].ca_file: %w", i, err)
		}
		sa, err := secret.FromFile(a.ServiceAccountFile)
		if err != nil {
			return nil, fmt.Errorf("fcm[%d].service_account_file: cannot read it", i)
		}
		project := a.ProjectID
		if project == "" {
			var p struct {
				ProjectID string `json:"project_id"`
			}
			_ = json.Unmarshal(sa.Bytes(), &p)
			project = p.ProjectID
		}
		cl, err := fcm.New(ctx, &fcm.Config{ProjectID: project, CredentialsJSON: sa, Endpoint: a.Endpoint, TLSConfig: tc, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("fcm[%d]: %w", i, err)
		}
		app(a.App).Push[push.FCM] = cl
	}
	for i, a := range c.WebPush {
		tc, err := tlsWith(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webpush[%d].ca_file: %w", i, err)
		}
		key, err := ResolveSecret(a.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("webpush[%d].vapid_private_key: %w", i, err)
		}
		cl, err := webpush.New(&webpush.Config{VAPIDPublicKey: a.PublicKey, VAPIDPrivateKey: key, Subscriber: a.Subscriber,
			AllowedHosts: a.AllowedHosts, AllowLoopback: a.AllowLoopback, TLSConfig: tc, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("webpush[%d]: %w", i, err)
		}
		app(a.App).Push[push.WebPush] = cl
	}
	for i, a := range c.SMTP {
		tc, err := tlsWith(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("smtp[%d].ca_file: %w", i, err)
		}
		mode := map[string]smtp.TLSMode{"": smtp.StartTLS, "starttls": smtp.StartTLS, "tls": smtp.ImplicitTLS, "none": smtp.NoTLS}[a.TLS]
		pw, _ := ResolveSecret(a.Password)
		cl, err := smtp.New(&smtp.Config{Host: a.Host, Port: a.Port, TLS: mode, TLSConfig: tc, Username: a.Username, Password: pw, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("smtp[%d]: %w", i, err)
		}
		app(a.App).Email = cl
	}
	for i, a := range c.Twilio {
		tc, err := tlsWith(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("twilio[%d].ca_file: %w", i, err)
		}
		tok, err := ResolveSecret(a.AuthToken)
		if err != nil {
			return nil, fmt.Errorf("twilio[%d].auth_token: %w", i, err)
		}
		cl, err := twilio.New(&twilio.Config{AccountSID: a.AccountSID, AuthToken: tok, BaseURL: a.BaseURL, TLSConfig: tc, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("twilio[%d]: %w", i, err)
		}
		app(a.App).SMS = cl
	}
	return apps, nil
}

// window parses a rule's window: day, week, or a rolling duration.
func window(s string) (capping.Window, error) {
	switch s {
	case "day":
		return capping.Calendar(capping.Day), nil
	case "week":
		return capping.Calendar(capping.Week), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return capping.Window{}, errors.New("day, week or a duration (24h)")
	}
	return capping.Rolling(d), nil
}

// limiter builds the caps.
func (c *Config) limiter(st capping.Store, log *slog.Logger) (*capping.Limiter, error) {
	if len(c.Capping.Rules) == 0 && c.Capping.QuietHours == nil {
		return nil, nil
	}
	kinds := map[string]capping.Kind{"global": capping.Global, "label": capping.Label, "automation": capping.Automation}
	var rules []capping.Rule
	for _, r := range c.Capping.Rules {
		w, _ := window(r.Window)
		if r.MinInterval > 0 {
			w = capping.Window{}
		}
		rules = append(rules, capping.Rule{Name: r.Name, Kind: kinds[r.Kind], Limit: r.Limit, Window: w,
			MinInterval: time.Duration(r.MinInterval), Channels: r.Channels, Labels: r.Labels,
			IncludeTransactional: r.IncludeTransactional, PerDevice: r.PerDevice})
	}
	cc := &capping.Config{Rules: rules, Logger: log}
	if q := c.Capping.QuietHours; q != nil {
		cc.QuietHours = &capping.QuietHours{Start: q.Start, End: q.End, Channels: q.Channels}
	}
	return capping.New(st, cc)
}

// sinks builds the tracking sinks.
func (c *Config) sinks(log *slog.Logger) []tracking.Sink {
	var out []tracking.Sink
	for _, s := range c.Tracking.Sinks {
		switch s.Kind {
		case "slog":
			out = append(out, &tracking.SlogSink{Logger: log})
		case "webhook":
			key, _ := ResolveSecret(s.Key)
			out = append(out, &tracking.WebhookSink{URL: s.URL, Secret: key})
		}
	}
	return out
}

// laneConfig is one kind of lane's settings.
func laneConfig(l LaneConfig) retry.LaneConfig {
	lc := retry.LaneConfig{Concurrency: l.Concurrency}
	if l.Rate > 0 {
		lc.Rate, lc.Burst = rate.Limit(l.Rate), max(1, int(l.Rate/10))
	}
	return lc
}

// keyName is how an API key is named in logs: its name, never the key.
func keyName(k *APIKey) string { return strconv.Quote(k.Name) }

// hasScope reports whether k has scope.
func (k *APIKey) hasScope(scope string) bool { return slices.Contains(k.Scopes, scope) }

// Migrate brings the configured store's schema up to date (PostgreSQL;
// the embedded and Redis stores migrate themselves when opened).
func Migrate(ctx context.Context, cfg *Config) error {
	st, err := openStores(ctx, &cfg.Store, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	return st.Close()
}
