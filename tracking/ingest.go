package tracking

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/secret"
)

// IngestConfig configures IngestHandler.
type IngestConfig struct {
	// Token, when set, must come as "Authorization: Bearer <token>".
	Token secret.Value
	// Authenticate, when set, authenticates each request as one user (a
	// web or mobile client with its user token, see inbox.Tokens) instead
	// of Token: every event of the batch is recorded as that user's,
	// whatever its user field says, and client IDs are namespaced per
	// user, so one user can neither write as another nor pre-empt another's
	// event IDs. An error is answered 401.
	Authenticate func(r *http.Request) (user string, err error)
	// HMACKey, when set, requires X-Herald-Timestamp and
	// X-Herald-Signature over the body (see Sign), within 5 minutes.
	HMACKey secret.Value
	// MaxBody caps a request body. Default 1 MiB (413 past it).
	MaxBody int64
	// MaxEvents caps events per batch. Default 500 (413 past it).
	MaxEvents int
	// MaxInFlight is how many batches are written at once before the
	// handler sheds load with 429. Default 64.
	MaxInFlight int
	// MaxFuture refuses events dated further ahead than this. Default 1h.
	MaxFuture time.Duration
	Logger    *slog.Logger
	Now       func() time.Time
}

// IngestResponse is the JSON answer.
type IngestResponse struct {
	Accepted   int        `json:"accepted"`   // new events now durable
	Duplicates int        `json:"duplicates"` // events whose ID was already recorded
	Rejected   []Rejected `json:"rejected,omitempty"`
}

// Rejected names a malformed event of a batch.
type Rejected struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}

// IngestHandler takes engagement events (opened, clicked, converted, ...)
// from apps and browsers as POST {"events":[...]}. Each event carries a
// client-made ID, so a client retries a batch freely and nothing counts
// twice. It answers 202 once the batch's valid events are durable; 400
// with the reasons when some events are malformed (the valid ones are kept);
// 413 for an oversized batch; 401 without valid authentication; 429 (too
// many batches at once) or 503 (the journal is failing) with Retry-After.
func IngestHandler(o *Outbox, cfg *IngestConfig) http.Handler {
	var c IngestConfig
	if cfg != nil {
		c = *cfg
	}
	c.MaxBody = cmp.Or(c.MaxBody, 1<<20)
	c.MaxEvents = cmp.Or(c.MaxEvents, 500)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, 64)
	c.MaxFuture = cmp.Or(c.MaxFuture, time.Hour)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	slots := make(chan struct{}, c.MaxInFlight)
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(w http.ResponseWriter, status int, msg string) {
		reply(w, status, map[string]string{"error": msg})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			fail(w, http.StatusMethodNotAllowed, "POST only")
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		default:
			w.Header().Set("Retry-After", "1")
			fail(w, http.StatusTooManyRequests, "too many batches in flight; retry")
			return
		}
		user := ""
		if c.Authenticate != nil {
			u, err := c.Authenticate(r)
			if err != nil || u == "" {
				fail(w, http.StatusUnauthorized, "missing, expired or forged user token")
				return
			}
			user = u
		} else if !c.Token.IsZero() {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), c.Token.Bytes()) != 1 {
				fail(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.MaxBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", c.MaxBody))
				return
			}
			fail(w, http.StatusBadRequest, "unreadable body")
			return
		}
		if !c.HMACKey.IsZero() && !VerifySignature(c.HMACKey.Bytes(), r.Header.Get("X-Herald-Timestamp"), r.Header.Get("X-Herald-Signature"), body, c.Now(), 5*time.Minute) {
			fail(w, http.StatusUnauthorized, "missing, stale or wrong signature")
			return
		}
		var batch struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(body, &batch); err != nil {
			fail(w, http.StatusBadRequest, `body must be {"events":[...]}`)
			return
		}
		if len(batch.Events) > c.MaxEvents {
			fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%d events, over %d per batch", len(batch.Events), c.MaxEvents))
			return
		}
		var res IngestResponse
		var valid []Event
		now := c.Now()
		for i, raw := range batch.Events {
			var e Event
			if err := json.Unmarshal(raw, &e); err != nil {
				res.Rejected = append(res.Rejected, Rejected{i, "not an event object"})
				continue
			}
			if err := e.Validate(); err != nil {
				res.Rejected = append(res.Rejected, Rejected{i, strings.TrimPrefix(err.Error(), "tracking: ")})
				continue
			}
			if !e.Type.IsEngagement() {
				res.Rejected = append(res.Rejected, Rejected{i, fmt.Sprintf("type %q is not an engagement type", e.Type)})
				continue
			}
			if e.At.After(now.Add(c.MaxFuture)) {
				res.Rejected = append(res.Rejected, Rejected{i, "time too far in the future"})
				continue
			}
			// Client IDs are namespaced so they never collide with herald's
			// own, nor (for user-authenticated clients) another user's.
			if user != "" {
				e.User = user
				e.ID = "client:" + userSpace(user) + ":" + e.ID
			} else {
				e.ID = "client:" + e.ID
			}
			valid = append(valid, e)
		}
		if len(valid) > 0 {
			n, err := o.TrackDurable(r.Context(), valid...)
			if err != nil {
				c.Logger.Warn("tracking: ingest could not record a batch", "events", len(valid), "err", err)
				w.Header().Set("Retry-After", strconv.Itoa(5))
				fail(w, http.StatusServiceUnavailable, "events not recorded; retry the batch")
				return
			}
			res.Accepted, res.Duplicates = n, len(valid)-n
		}
		status := http.StatusAccepted
		if len(res.Rejected) > 0 {
			status = http.StatusBadRequest
		}
		reply(w, status, res)
	})
}

// userSpace is a short fixed-width namespace for a user's client event
// IDs (a digest: the user ID itself may hold any character).
func userSpace(user string) string {
	sum := sha256.Sum256([]byte(user))
	return hex.EncodeToString(sum[:8])
}
