package tracking

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/heraldhq/herald/secret"
)

// SlogSink writes each event as a structured log record. It never fails.
type SlogSink struct {
	Logger *slog.Logger // default slog.Default()
	Level  slog.Level
}

// Name implements Sink.
func (s *SlogSink) Name() string { return "slog" }

// Write implements Sink. Users and devices are logged as given: hash them
// before tracking if they are personal data.
func (s *SlogSink) Write(ctx context.Context, events []Event) error {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	for i := range events {
		e := &events[i]
		log.LogAttrs(ctx, s.Level, "herald event",
			slog.String("id", e.ID), slog.String("type", string(e.Type)), slog.String("message", e.MessageID),
			slog.String("channel", e.Channel), slog.String("provider", e.Provider), slog.String("campaign", e.Campaign),
			slog.String("error_class", e.ErrorClass), slog.Time("at", e.At))
	}
	return nil
}

// WebhookSink posts batches of events as JSON, signed with HMAC-SHA256.
//
// The body is {"events":[...]}. Headers: X-Herald-Timestamp (unix seconds)
// and X-Herald-Signature: "v1=" + hex(HMAC-SHA256(secret, timestamp + "." +
// body)). A receiver checks the signature and that the timestamp is recent,
// and deduplicates by event ID: a batch that failed is sent again whole.
type WebhookSink struct {
	URL    string
	Secret secret.Value
	// Client defaults to one with a 10s timeout that follows no redirects.
	Client *http.Client
	Now    func() time.Time
}

// Name implements Sink.
func (s *WebhookSink) Name() string { return "webhook" }

// Sign computes the signature header value for a body sent at ts.
func Sign(key []byte, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(strconv.FormatInt(ts, 10) + "."))
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// VerifySignature checks a webhook request's signature and that its
// timestamp is within tolerance of now.
func VerifySignature(key []byte, tsHeader, sigHeader string, body []byte, now time.Time, tolerance time.Duration) bool {
	ts, err := strconv.ParseInt(tsHeader, 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return false
	}
	return hmac.Equal([]byte(Sign(key, ts, body)), []byte(sigHeader))
}

// Write implements Sink: any non-2xx answer is an error to retry.
func (s *WebhookSink) Write(ctx context.Context, events []Event) error {
	body, err := json.Marshal(map[string][]Event{"events": events})
	if err != nil {
		return err
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	ts := now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Herald-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("X-Herald-Signature", Sign(s.Secret.Bytes(), ts, body))
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("tracking: webhook answered %d", res.StatusCode)
	}
	return nil
}

// SQLSink inserts events into a table with database/sql, ignoring event IDs
// already there. Create the table with CreateTableSQL.
type SQLSink struct {
	DB    *sql.DB
	Table string // default herald_events
	// Postgres selects $n placeholders and ON CONFLICT DO NOTHING;
	// otherwise ? placeholders and INSERT OR IGNORE (SQLite).
	Postgres bool
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func (s *SQLSink) table() (string, error) {
	t := cmp.Or(s.Table, "herald_events")
	if !identRE.MatchString(t) {
		return "", fmt.Errorf("tracking: SQLSink.Table %q is not a plain identifier", t)
	}
	return t, nil
}

// CreateTableSQL returns the CREATE TABLE statement for the sink's table.
func (s *SQLSink) CreateTableSQL() (string, error) {
	t, err := s.table()
	if err != nil {
		return "", err
	}
	return `CREATE TABLE IF NOT EXISTS ` + t + ` (
	id TEXT PRIMARY KEY, message_id TEXT NOT NULL, type TEXT NOT NULL, at TIMESTAMP NOT NULL,
	user_id TEXT, device TEXT, channel TEXT, provider TEXT, campaign TEXT, automation TEXT,
	labels TEXT, attempt INTEGER, provider_message_id TEXT, error_class TEXT)`, nil
}

// Name implements Sink.
func (s *SQLSink) Name() string { return "sql:" + cmp.Or(s.Table, "herald_events") }

// Write implements Sink: one transaction per batch.
func (s *SQLSink) Write(ctx context.Context, events []Event) error {
	t, err := s.table()
	if err != nil {
		return err
	}
	cols := "id, message_id, type, at, user_id, device, channel, provider, campaign, automation, labels, attempt, provider_message_id, error_class"
	ph := make([]string, 14)
	for i := range ph {
		ph[i] = "?"
		if s.Postgres {
			ph[i] = "$" + strconv.Itoa(i+1)
		}
	}
	q := "INSERT OR IGNORE INTO " + t + " (" + cols + ") VALUES (" + strings.Join(ph, ",") + ")"
	if s.Postgres {
		q = "INSERT INTO " + t + " (" + cols + ") VALUES (" + strings.Join(ph, ",") + ") ON CONFLICT (id) DO NOTHING"
	}
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	st, err := tx.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	defer st.Close()
	for i := range events {
		e := &events[i]
		if _, err := st.ExecContext(ctx, e.ID, e.MessageID, string(e.Type), e.At.UTC(), e.User, e.Device, e.Channel, e.Provider,
			e.Campaign, e.Automation, strings.Join(e.Labels, ","), e.Attempt, e.ProviderMessageID, e.ErrorClass); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// OTelSink counts events as an OpenTelemetry counter,
// "herald.events", with attributes channel, provider, type and error_class.
type OTelSink struct {
	counter metric.Int64Counter
}

// NewOTelSink creates the counter on meter.
func NewOTelSink(meter metric.Meter) (*OTelSink, error) {
	c, err := meter.Int64Counter("herald.events", metric.WithDescription("herald delivery and engagement events"), metric.WithUnit("{event}"))
	if err != nil {
		return nil, err
	}
	return &OTelSink{counter: c}, nil
}

// Name implements Sink.
func (s *OTelSink) Name() string { return "otel" }

// Write implements Sink.
func (s *OTelSink) Write(ctx context.Context, events []Event) error {
	if s.counter == nil {
		return errors.New("tracking: OTelSink not made with NewOTelSink")
	}
	for i := range events {
		e := &events[i]
		s.counter.Add(ctx, 1, metric.WithAttributes(
			attribute.String("channel", e.Channel), attribute.String("provider", e.Provider),
			attribute.String("type", string(e.Type)), attribute.String("error_class", e.ErrorClass)))
	}
	return nil
}
