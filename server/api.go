package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// maxMessage caps a message body: an email with 10 MiB of attachments in
// JSON's base64, and room around it.
const maxMessage = 14 << 20

// decode reads one JSON object with known fields only: 415 without a JSON
// content type, 413 past max, 400 naming what is wrong.
func decode(w http.ResponseWriter, r *http.Request, max int64, v any) bool {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		fail(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json", "")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", mbe.Limit), "")
		case errors.As(err, &ute):
			fail(w, http.StatusBadRequest, fmt.Sprintf("%s: wrong type (%s expected)", ute.Field, ute.Type), ute.Field)
		default:
			// "json: unknown field "X"" names the field; syntax errors say where.
			fail(w, http.StatusBadRequest, "malformed body: "+err.Error(), "")
		}
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		fail(w, http.StatusBadRequest, "trailing data after the JSON object", "")
		return false
	}
	return true
}

// sendMessage is POST /v1/messages: a herald.Message; the Idempotency-Key
// header is its key (or the body's IdempotencyKey; both must agree).
func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) {
	var m herald.Message
	if !decode(w, r, maxMessage, &m) {
		return
	}
	if h := r.Header.Get("Idempotency-Key"); h != "" {
		if m.IdempotencyKey != "" && m.IdempotencyKey != h {
			fail(w, http.StatusBadRequest, "the Idempotency-Key header and the body's IdempotencyKey differ", "IdempotencyKey")
			return
		}
		m.IdempotencyKey = h
	}
	if msg := s.otherRole(m.Transactional); msg != "" {
		fail(w, http.StatusConflict, msg, "Transactional")
		return
	}
	res, err := s.d.Send(r.Context(), m)
	var fe *herald.FieldError
	var ce *herald.ConflictError
	switch {
	case errors.As(err, &fe):
		fail(w, http.StatusBadRequest, fe.Error(), fe.Field)
	case errors.As(err, &ce):
		fail(w, http.StatusConflict, ce.Error(), ce.Field)
	case err != nil:
		s.log.Warn("heraldd: a message was not accepted", "err", err)
		w.Header().Set("Retry-After", "1")
		fail(w, http.StatusServiceUnavailable, "not accepted: retry with the same Idempotency-Key", "")
	default:
		status := http.StatusAccepted
		if res.Duplicate {
			status = http.StatusOK
		}
		reply(w, status, map[string]any{"id": res.ID, "duplicate": res.Duplicate})
	}
}

// otherRole says why a message that belongs to the other instance of a
// split deployment is refused here, or "" if this instance sends it.
func (s *Server) otherRole(transactional bool) string {
	switch {
	case s.cfg.Role == RoleTransactional && !transactional:
		return "this instance's role is transactional: send messages that are not transactional, and campaigns, to the marketing instance"
	case s.cfg.Role == RoleMarketing && transactional:
		return "this instance's role is marketing: send transactional messages to the transactional instance"
	}
	return ""
}

// marketingOnly refuses a campaign's or an audience's request at an
// instance whose role is transactional.
func (s *Server) marketingOnly(h http.HandlerFunc) http.HandlerFunc {
	if s.cfg.Role != RoleTransactional {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusConflict, s.otherRole(false), "")
	}
}

// messageView is a message's status and history.
type messageView struct {
	ID          int64       `json:"id"`
	Key         string      `json:"key"`
	Lane        string      `json:"lane"`
	State       string      `json:"state"`
	Attempt     int         `json:"attempt"`
	MaxAttempts int         `json:"max_attempts"`
	Skipped     bool        `json:"skipped,omitempty"`
	LastError   string      `json:"last_error,omitempty"`
	RunAt       time.Time   `json:"run_at"`
	ExpiresAt   time.Time   `json:"expires_at,omitzero"`
	CreatedAt   time.Time   `json:"created_at"`
	FinishedAt  time.Time   `json:"finished_at,omitzero"`
	History     []eventView `json:"history"`
}

type eventView struct {
	Type       tracking.Type `json:"type"`
	At         time.Time     `json:"at"`
	Attempt    int           `json:"attempt,omitempty"`
	Provider   string        `json:"provider,omitempty"`
	ErrorClass string        `json:"error_class,omitempty"`
	Reason     string        `json:"reason,omitempty"`
}

func (s *Server) view(r *http.Request, id int64) (*messageView, int) {
	j, err := s.d.Queue().Job(r.Context(), id)
	if errors.Is(err, retry.ErrNotFound) {
		return nil, http.StatusNotFound
	}
	if err != nil {
		return nil, http.StatusServiceUnavailable
	}
	v := &messageView{ID: j.ID, Key: j.IdempotencyKey, Lane: j.Lane, State: j.State.String(), Attempt: j.Attempt,
		MaxAttempts: j.MaxAttempts, Skipped: j.Skipped, LastError: j.LastError, RunAt: j.RunAt, ExpiresAt: j.ExpiresAt,
		CreatedAt: j.CreatedAt, FinishedAt: j.FinishedAt, History: []eventView{}}
	if mr, ok := s.st.tracking.(tracking.MessageReader); ok && j.IdempotencyKey != "" {
		evs, err := mr.MessageEvents(r.Context(), j.IdempotencyKey, 200)
		if err == nil {
			for _, e := range evs {
				v.History = append(v.History, eventView{e.Type, e.At, e.Attempt, e.Provider, e.ErrorClass, e.Reason})
			}
		}
	}
	return v, http.StatusOK
}

func (s *Server) messageByID(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		fail(w, http.StatusBadRequest, "id: a message ID (a positive integer)", "id")
		return
	}
	s.writeView(w, r, id)
}

func (s *Server) writeView(w http.ResponseWriter, r *http.Request, id int64) {
	v, status := s.view(r, id)
	switch status {
	case http.StatusOK:
		reply(w, status, v)
	case http.StatusNotFound:
		fail(w, status, "no such message", "")
	default:
		fail(w, status, "store unavailable; try again", "")
	}
}

// messageByKey is GET /v1/messages?key=...
func (s *Server) messageByKey(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if key == "" {
		fail(w, http.StatusBadRequest, "key: the message's idempotency key", "key")
		return
	}
	kf, ok := s.st.retry.(retry.KeyFinder)
	if !ok {
		fail(w, http.StatusNotImplemented, errNoKeyFinder.Error(), "key")
		return
	}
	id, err := kf.JobIDByKey(r.Context(), key)
	if errors.Is(err, retry.ErrNotFound) {
		fail(w, http.StatusNotFound, "no message with that key", "")
		return
	}
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable; try again", "")
		return
	}
	s.writeView(w, r, id)
}

// ingest is POST /v1/events (server-side engagement events).
func (s *Server) ingest() http.Handler {
	return tracking.IngestHandler(s.outbox, &tracking.IngestConfig{Logger: s.log})
}

// inboxToken is POST /v1/inbox/tokens {"user": "..."}: the host's
// backend asks for its logged-in user's token.
func (s *Server) inboxToken(w http.ResponseWriter, r *http.Request) {
	var body struct {
		User string `json:"user"`
	}
	if !decode(w, r, 4<<10, &body) {
		return
	}
	if body.User == "" || len(body.User) > 200 {
		fail(w, http.StatusBadRequest, "user: 1 to 200 bytes", "user")
		return
	}
	now := time.Now()
	reply(w, http.StatusOK, map[string]any{"token": s.tokens.Sign(body.User, now), "expires_at": now.Add(s.tokens.TTL)})
}

// Admin API.

// laneView is a lane as the admin API shows it.
type laneView struct {
	Lane               string  `json:"lane"`
	Paused             bool    `json:"paused"`
	Ready              int     `json:"ready"`
	Scheduled          int     `json:"scheduled"`
	Running            int     `json:"running"`
	Completed          int     `json:"completed"`
	Dead               int     `json:"dead"`
	Expired            int     `json:"expired"`
	OldestReadySeconds float64 `json:"oldest_ready_seconds"`
}

// lanes are every route's lanes, those without messages yet included.
func (s *Server) lanes(r *http.Request) ([]retry.LaneStats, error) {
	st, err := s.d.Queue().Stats(r.Context())
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, l := range st {
		seen[l.Lane] = true
	}
	for _, c := range s.d.Circuits() {
		for _, l := range []string{herald.Lane(true, c.Route), herald.Lane(false, c.Route)} {
			if !seen[l] {
				st = append(st, retry.LaneStats{Lane: l})
			}
		}
	}
	slices.SortFunc(st, func(a, b retry.LaneStats) int { return strings.Compare(a.Lane, b.Lane) })
	return st, nil
}

func (s *Server) adminLanes(w http.ResponseWriter, r *http.Request) {
	st, err := s.lanes(r)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return
	}
	out := make([]laneView, len(st))
	for i, l := range st {
		out[i] = laneView{l.Lane, l.Paused, l.Ready, l.Scheduled, l.Running, l.Completed, l.Dead, l.Expired, l.OldestReady.Seconds()}
	}
	reply(w, http.StatusOK, map[string]any{"lanes": out})
}

func (s *Server) lane(w http.ResponseWriter, r *http.Request, f func(lane string) error, verb string) {
	lane := r.PathValue("lane")
	if !s.knownLane(r, lane) {
		fail(w, http.StatusNotFound, "no such lane", "lane")
		return
	}
	if err := f(lane); err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return
	}
	s.log.Info("heraldd: lane "+verb, "lane", lane)
	reply(w, http.StatusOK, map[string]any{"lane": lane, verb: true})
}

func (s *Server) knownLane(r *http.Request, lane string) bool {
	st, err := s.lanes(r)
	if err != nil {
		return false
	}
	for _, l := range st {
		if l.Lane == lane {
			return true
		}
	}
	return false
}

func (s *Server) adminPause(w http.ResponseWriter, r *http.Request) {
	s.lane(w, r, func(l string) error { return s.d.Queue().Pause(r.Context(), l) }, "paused")
}

func (s *Server) adminResume(w http.ResponseWriter, r *http.Request) {
	s.lane(w, r, func(l string) error { return s.d.Queue().Resume(r.Context(), l) }, "resumed")
}

func (s *Server) adminCircuits(w http.ResponseWriter, _ *http.Request) {
	reply(w, http.StatusOK, map[string]any{"circuits": s.d.Circuits()})
}

// deadFilter reads ?lane=&after=&limit= (limit default 50, at most 500).
func deadFilter(r *http.Request) (retry.Filter, string) {
	q := r.URL.Query()
	f := retry.Filter{Lane: q.Get("lane"), States: []retry.State{retry.StateDead}, Limit: 50}
	if a := q.Get("after"); a != "" {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil || n < 0 {
			return f, "after"
		}
		f.AfterID = n
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			return f, "limit"
		}
		f.Limit = n
	}
	return f, ""
}

type deadView struct {
	ID        int64     `json:"id"`
	Key       string    `json:"key"`
	Lane      string    `json:"lane"`
	Attempt   int       `json:"attempt"`
	LastError string    `json:"last_error"`
	At        time.Time `json:"finished_at"`
}

func (s *Server) dead(r *http.Request, f retry.Filter) ([]deadView, error) {
	jobs, err := s.d.Queue().DeadLetters(r.Context(), f)
	if err != nil {
		return nil, err
	}
	out := make([]deadView, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, deadView{j.ID, j.IdempotencyKey, j.Lane, j.Attempt, j.LastError, j.FinishedAt})
	}
	return out, nil
}

func (s *Server) adminDead(w http.ResponseWriter, r *http.Request) {
	f, bad := deadFilter(r)
	if bad != "" {
		fail(w, http.StatusBadRequest, bad+": a positive integer (limit at most 500)", bad)
		return
	}
	out, err := s.dead(r, f)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"dead": out})
}

func (s *Server) adminRequeue(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		fail(w, http.StatusBadRequest, "id: a message ID", "id")
		return
	}
	switch err := s.d.Queue().Requeue(r.Context(), id); {
	case errors.Is(err, retry.ErrNotFound):
		fail(w, http.StatusNotFound, "no such dead letter", "id")
	case err != nil:
		fail(w, http.StatusConflict, "not requeued: "+err.Error(), "id")
	default:
		reply(w, http.StatusOK, map[string]any{"requeued": 1})
	}
}

func (s *Server) adminRequeueMatching(w http.ResponseWriter, r *http.Request) {
	f := retry.Filter{Lane: r.URL.Query().Get("lane"), States: []retry.State{retry.StateDead}}
	n, err := s.d.Queue().RequeueMatching(r.Context(), f)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"requeued": n})
}

func (s *Server) adminPurge(w http.ResponseWriter, r *http.Request) {
	f := retry.Filter{Lane: r.URL.Query().Get("lane"), States: []retry.State{retry.StateDead}}
	n, err := s.d.Queue().Purge(r.Context(), f)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"purged": n})
}

// adminCapping is a user's counters: GET /v1/admin/users/{user}/capping
// ?channel=push&tz=Europe/Paris.
func (s *Server) adminCapping(w http.ResponseWriter, r *http.Request) {
	if s.limiter == nil {
		reply(w, http.StatusOK, map[string]any{"usage": []capping.Usage{}})
		return
	}
	q := r.URL.Query()
	sub := capping.Subject{User: r.PathValue("user"), Channel: q.Get("channel"), TimeZone: q.Get("tz")}
	u, err := s.limiter.Usage(r.Context(), sub, time.Now())
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error(), "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"usage": u})
}

// adminStore reports the embedded file's writer over the last minute
// (404 for a store without a file: PostgreSQL).
func (s *Server) adminStore(w http.ResponseWriter, _ *http.Request) {
	l, ok := s.storeLoad()
	if !ok {
		fail(w, http.StatusNotFound, "no embedded store file to report on", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"load": l, "saturated": l.Saturated()})
}

// adminTracking is the sinks' backlogs and the gaps of the last 7 days.
func (s *Server) adminTracking(w http.ResponseWriter, r *http.Request) {
	sinks, err := s.outbox.SinkStatus(r.Context())
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "journal unavailable", "")
		return
	}
	now := time.Now()
	gaps, err := s.outbox.Gaps(r.Context(), now.Add(-7*24*time.Hour), now)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "journal unavailable", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"sinks": sinks, "pending": s.outbox.Pending(), "gaps": gaps})
}
