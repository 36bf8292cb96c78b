// Package capping is frequency capping that counts at the send path: a
// slot is reserved before a message is sent and committed or released by
// the send's result, so marketing pressure stays right when analytics or
// tracking are down.
//
//	l, _ := capping.New(store, &capping.Config{Rules: []capping.Rule{
//		{Name: "daily", Kind: capping.Global, Limit: 3, Window: capping.Calendar(capping.Day)},
//		{Name: "promo", Kind: capping.Label, Limit: 1, Window: capping.Rolling(7 * 24 * time.Hour)},
//	}})
//	d, _ := l.Reserve(ctx, capping.Subject{User: "u1", TimeZone: "Europe/Paris", Channel: "push", Labels: []string{"promo"}}, time.Now())
//	switch {
//	case d.Allowed:       // send, then l.Commit(ctx, d.Reservation) or l.Release on a permanent failure
//	case d.Deferred():    // try again at d.DeferUntil (quiet hours, full window, store down)
//	default:              // capped by d.CappedBy for good... until the window moves
//	}
//
// Reserve checks every matching rule and takes a slot in all of them
// atomically, or in none. A reservation neither committed nor released
// within its lease counts as sent.
package capping

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is what a rule counts.
type Kind int

// Rule kinds.
const (
	// Global counts every message of a user (in the rule's channels).
	Global Kind = iota + 1
	// Label counts per label; a message with several labels is checked
	// against each.
	Label
	// Automation counts per recurring automation.
	Automation
)

// Unit is a calendar window.
type Unit int

// Calendar units.
const (
	Day Unit = iota + 1
	Week
)

// Window is how far back a rule counts.
type Window struct {
	rolling  time.Duration
	calendar Unit
}

// Rolling counts the last d: a message sent at t counts until t+d.
func Rolling(d time.Duration) Window { return Window{rolling: d} }

// Calendar counts since the start of the current day or week (Monday) in
// the user's time zone.
func Calendar(u Unit) Window { return Window{calendar: u} }

// Rule is one cap.
type Rule struct {
	Name  string
	Kind  Kind
	Limit int // at most Limit messages per window (0 with MinInterval set)
	// Window is how far back Limit counts.
	Window Window
	// MinInterval, for automation rules, is the least time between two
	// messages of one automation (instead of Limit and Window).
	MinInterval time.Duration
	// Channels limits the rule to these channels; empty: all.
	Channels []string
	// Labels limits a label rule to these labels; empty: every label.
	Labels []string
	// IncludeTransactional applies the rule to transactional messages,
	// which are otherwise exempt.
	IncludeTransactional bool
	// PerDevice counts per device instead of per user.
	PerDevice bool
	// TimeZone fixes the zone of a calendar window (IANA name) instead of
	// the user's.
	TimeZone string
}

// QuietHours is a daily window in the user's time zone when marketing
// messages wait. Start and End are "HH:MM"; End before Start spans midnight.
type QuietHours struct {
	Start, End string
	// Channels limits quiet hours to these channels; empty: all.
	Channels []string
	// Drop refuses messages in quiet hours instead of deferring them to
	// the end of the window.
	Drop bool
	// IncludeTransactional applies quiet hours to transactional messages.
	IncludeTransactional bool
}

// Policy decides what Reserve does when the store cannot be reached.
type Policy int

// Policies.
const (
	// Defer answers "deferred" (retry later): nothing is sent uncounted.
	Defer Policy = iota
	// AllowAndJournal answers "allowed" and records the reservation in the
	// Journal, for Reconcile when the store is back.
	AllowAndJournal
)

// Config configures a Limiter.
type Config struct {
	Rules      []Rule
	QuietHours *QuietHours
	// Lease is how long a reservation waits for Commit or Release before
	// it counts as sent. Default 10 minutes.
	Lease time.Duration
	// OnStoreDown is the policy when the store fails. Default Defer.
	OnStoreDown Policy
	// RetryDelay is how far a Defer decision pushes a message when the
	// store is down. Default 1 minute.
	RetryDelay time.Duration
	// Journal receives reservations allowed while the store was down
	// (AllowAndJournal). Default: an in-memory journal (Limiter.Journal).
	Journal Journal
	// DefaultTimeZone applies to subjects without one (IANA name). Default UTC.
	DefaultTimeZone string
	Logger          *slog.Logger
}

// Subject is the message asking for a slot.
type Subject struct {
	User     string
	Device   string
	TimeZone string // IANA name; default UTC
	Channel  string
	Labels   []string
	// Automation is the recurring automation that sends it, if any.
	Automation    string
	Transactional bool
}

// Decision is Reserve's answer.
type Decision struct {
	Allowed bool
	// Reservation is the ID to Commit or Release (empty when nothing was
	// reserved: no rule matched, or not allowed).
	Reservation string
	// CappedBy names the rule that refused ("quiet hours" for quiet hours).
	CappedBy string
	// DeferUntil is when the message may be tried again (zero: never in
	// this window... or not deferred).
	DeferUntil time.Time
	// Journaled is true when the store was down and the reservation went
	// to the journal (AllowAndJournal).
	Journaled bool
}

// Deferred reports whether the message should be retried at DeferUntil.
func (d Decision) Deferred() bool { return !d.Allowed && !d.DeferUntil.IsZero() }

// RuleError names the rule a config refused.
type RuleError struct {
	Rule   string
	Reason string
}

func (e *RuleError) Error() string { return fmt.Sprintf("capping: rule %q: %s", e.Rule, e.Reason) }

// ErrStoreDown wraps store failures in decisions' logs and Usage.
var ErrStoreDown = errors.New("capping: store unavailable")

// Limiter applies rules through a Store. It is safe for concurrent use.
type Limiter struct {
	store Store
	cfg   Config
	rules []rule
	quiet *quiet
	locs  sync.Map // time zone name -> *time.Location
	// Reservation IDs are idPrefix (random per limiter) and a sequence:
	// unique across processes without a random read per reservation.
	idPrefix string
	idSeq    atomic.Uint64
	idBlocks sync.Pool // *idBlock: ranges of idSeq, so goroutines do not contend on it
}

type rule struct {
	Rule
	keep     int64 // how long a slot can matter to the rule (ns)
	channels map[string]bool
	labels   map[string]bool
	loc      *time.Location // nil: the user's
}

type quiet struct {
	QuietHours
	start, end int // minutes after midnight
	channels   map[string]bool
}

// New validates cfg and returns a limiter. Bad rules (no name, duplicate
// names, zero window, negative limit, unknown kind) are refused with a
// *RuleError naming the rule.
func New(store Store, cfg *Config) (*Limiter, error) {
	if store == nil {
		return nil, errors.New("capping: New: missing store (try capping.NewMemoryStore or embedded.Open(path).Capping())")
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	l := &Limiter{store: store, idPrefix: hex.EncodeToString(rnd[:]) + "-"}
	if cfg != nil {
		l.cfg = *cfg
	}
	l.cfg.Lease = cmp.Or(l.cfg.Lease, 10*time.Minute)
	l.cfg.RetryDelay = cmp.Or(l.cfg.RetryDelay, time.Minute)
	if l.cfg.Journal == nil {
		l.cfg.Journal = &MemoryJournal{}
	}
	if l.cfg.Logger == nil {
		l.cfg.Logger = slog.New(slog.DiscardHandler)
	}
	seen := map[string]bool{}
	for _, r := range l.cfg.Rules {
		bad := func(why string) error { return &RuleError{Rule: r.Name, Reason: why} }
		switch {
		case r.Name == "":
			return nil, bad("no name")
		case strings.ContainsAny(r.Name, "|"):
			return nil, bad(`name may not contain "|"`)
		case seen[r.Name]:
			return nil, bad("duplicate name")
		case r.Kind < Global || r.Kind > Automation:
			return nil, bad("unknown kind")
		case r.Limit < 0:
			return nil, bad("negative limit")
		case r.MinInterval < 0:
			return nil, bad("negative minimum interval")
		case r.MinInterval > 0 && r.Kind != Automation:
			return nil, bad("MinInterval applies to automation rules")
		case r.MinInterval > 0 && (r.Limit != 0 || r.Window != Window{}):
			return nil, bad("set MinInterval or Limit and Window, not both")
		case r.MinInterval == 0 && r.Window.rolling <= 0 && r.Window.calendar == 0:
			return nil, bad("zero window: use Rolling(d) with d > 0 or Calendar(Day/Week)")
		case r.MinInterval == 0 && r.Window.calendar != 0 && r.Window.calendar != Day && r.Window.calendar != Week:
			return nil, bad("unknown calendar unit")
		case r.MinInterval == 0 && r.Limit == 0:
			return nil, bad("limit 0 would refuse every message; remove the rule or pause the channel")
		}
		seen[r.Name] = true
		rr := rule{Rule: r, channels: set(r.Channels), labels: set(r.Labels)}
		if r.TimeZone != "" {
			loc, err := l.location(r.TimeZone)
			if err != nil {
				return nil, bad(fmt.Sprintf("unknown time zone %q", r.TimeZone))
			}
			rr.loc = loc
		}
		if r.MinInterval > 0 {
			rr.Limit, rr.Window = 1, Rolling(r.MinInterval)
		}
		switch rr.Window.calendar {
		case Day:
			rr.keep = int64(25 * time.Hour) // a day, and an hour of daylight saving
		case Week:
			rr.keep = int64(7*24*time.Hour + time.Hour)
		default:
			rr.keep = int64(rr.Window.rolling)
		}
		l.rules = append(l.rules, rr)
	}
	if _, err := l.location(l.cfg.DefaultTimeZone); err != nil {
		return nil, &RuleError{Rule: "DefaultTimeZone", Reason: fmt.Sprintf("unknown time zone %q", l.cfg.DefaultTimeZone)}
	}
	if q := l.cfg.QuietHours; q != nil {
		start, err1 := clock(q.Start)
		end, err2 := clock(q.End)
		if err1 != nil || err2 != nil || start == end {
			return nil, &RuleError{Rule: "quiet hours", Reason: `Start and End must be distinct "HH:MM" times`}
		}
		l.quiet = &quiet{QuietHours: *q, start: start, end: end, channels: set(q.Channels)}
	}
	return l, nil
}

func set(xs []string) map[string]bool {
	if len(xs) == 0 {
		return nil
	}
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func clock(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, err
	}
	return t.Hour()*60 + t.Minute(), nil
}

// Journal records reservations allowed while the store was down.
type Journal interface {
	Append(ctx context.Context, e JournalEntry) error
}

// JournalEntry is one reservation made without the store.
type JournalEntry struct {
	ID   string
	Keys []string
	At   time.Time
}

// MemoryJournal is an in-memory Journal.
type MemoryJournal struct {
	mu      sync.Mutex
	entries []JournalEntry
}

// Append implements Journal.
func (j *MemoryJournal) Append(_ context.Context, e JournalEntry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, e)
	return nil
}

// Drain returns and forgets the entries.
func (j *MemoryJournal) Drain() []JournalEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := j.entries
	j.entries = nil
	return out
}

func (l *Limiter) location(name string) (*time.Location, error) {
	if name == "" {
		name = l.cfg.DefaultTimeZone
	}
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if v, ok := l.locs.Load(name); ok {
		return v.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("capping: unknown time zone %q: %w", name, err)
	}
	l.locs.Store(name, loc)
	return loc, nil
}

// windowStart returns the start of w at now in loc, and when the window
// next frees a slot at the latest (the calendar window's end).
func windowStart(w Window, now time.Time, loc *time.Location) (since, end time.Time) {
	if w.rolling > 0 {
		// A slot leaves the window just after d: one microsecond, the
		// finest time every store keeps (PostgreSQL).
		return now.Add(-w.rolling).Add(time.Microsecond), time.Time{}
	}
	t := now.In(loc)
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc)
	if w.calendar == Week {
		offset := (int(t.Weekday()) + 6) % 7 // days since Monday
		day = time.Date(t.Year(), t.Month(), t.Day()-offset, 0, 0, 0, 0, loc)
		return day, time.Date(day.Year(), day.Month(), day.Day()+7, 0, 0, 0, 0, loc)
	}
	return day, time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, loc)
}

// planItem is one check a subject must pass: a rule and, for label and
// automation rules, the label or automation it counts.
type planItem struct {
	rule  *rule
	qual  byte // 'l' (label), 'a' (automation) or 0
	value string
	since time.Time
	end   time.Time // a calendar window's end; zero for a rolling one
}

// plan is the checks a subject must pass. Counter keys are built only
// when a store needs them as strings.
type plan struct {
	items []planItem
}

// plan appends to buf the checks s must pass at now (buf on the caller's
// stack saves an allocation per reservation).
func (l *Limiter) plan(buf []planItem, s *Subject, now time.Time, loc *time.Location) plan {
	p := plan{items: buf[:0]}
	for i := range l.rules {
		r := &l.rules[i]
		if s.Transactional && !r.IncludeTransactional {
			continue
		}
		if r.channels != nil && !r.channels[s.Channel] {
			continue
		}
		rloc := loc
		if r.loc != nil {
			rloc = r.loc
		}
		since, end := windowStart(r.Window, now, rloc)
		switch r.Kind {
		case Global:
			p.items = append(p.items, planItem{rule: r, since: since, end: end})
		case Label:
			for _, lb := range s.Labels {
				if r.labels == nil || r.labels[lb] {
					p.items = append(p.items, planItem{rule: r, qual: 'l', value: lb, since: since, end: end})
				}
			}
		case Automation:
			if s.Automation != "" {
				p.items = append(p.items, planItem{rule: r, qual: 'a', value: s.Automation, since: since, end: end})
			}
		}
	}
	return p
}

// appendKey appends the counter key of it for s:
// "rule|user[|d:device][|l:label or |a:automation]".
func appendKey(b []byte, s *Subject, it *planItem) []byte {
	b = append(b, it.rule.Name...)
	b = append(b, '|')
	b = append(b, s.User...)
	if it.rule.PerDevice {
		b = append(b, "|d:"...)
		b = append(b, s.Device...)
	}
	if it.qual != 0 {
		b = append(b, '|', it.qual, ':')
		b = append(b, it.value...)
	}
	return b
}

func (p *plan) check(s *Subject, i int) Check {
	it := &p.items[i]
	return Check{Key: string(appendKey(nil, s, it)), Since: it.since, Limit: it.rule.Limit}
}

func (p *plan) checks(s *Subject) []Check {
	out := make([]Check, len(p.items))
	for i := range p.items {
		out[i] = p.check(s, i)
	}
	return out
}

func (p *plan) keys(s *Subject) []string {
	out := make([]string, len(p.items))
	for i := range p.items {
		out[i] = string(appendKey(nil, s, &p.items[i]))
	}
	return out
}

// reserveMemory is Reserve's path to a MemoryStore: keys are built in a
// scratch buffer and looked up without being allocated, which more than
// doubles the reservations per second (BENCHMARKS.md).
func (l *Limiter) reserveMemory(ctx context.Context, ms *MemoryStore, id string, s *Subject, p *plan, now time.Time) (int, error) {
	var kbuf [256]byte
	var cbuf [6]memCheck
	if len(p.items) > len(cbuf) {
		return ms.Reserve(ctx, id, p.checks(s), now, now.Add(l.cfg.Lease))
	}
	kb := kbuf[:0]
	shard := ms.userShard(s.User)
	for i := range p.items {
		it := &p.items[i]
		start := len(kb)
		kb = appendKey(kb, s, it)
		cbuf[i] = memCheck{
			bkey:  kb[start:len(kb):len(kb)], // later appends never write here
			shard: shard,
			since: it.since.UnixNano(),
			limit: it.rule.Limit,
			keep:  it.rule.keep,
		}
	}
	return ms.reserve(ctx, id, shard, cbuf[:len(p.items)], now.UnixNano(), now.Add(l.cfg.Lease).UnixNano())
}

// Reserve decides whether s may be sent at now and, if so, takes a slot in
// every matching rule. An error means the subject itself is bad (unknown
// time zone); store failures are answered by the OnStoreDown policy.
func (l *Limiter) Reserve(ctx context.Context, s Subject, now time.Time) (Decision, error) {
	return l.reserve(ctx, "", s, now)
}

// ReserveFor is Reserve for a message with a stable identity (its
// idempotency key): while the reservation it made is pending, reserving
// again for the same message takes no second slot and returns the same
// reservation. A sender whose attempt ended without knowing whether the
// provider took the message keeps the slot, and its retry reuses it
// instead of counting the message twice.
func (l *Limiter) ReserveFor(ctx context.Context, message string, s Subject, now time.Time) (Decision, error) {
	if message == "" {
		return Decision{}, errors.New("capping: ReserveFor: empty message key")
	}
	return l.reserve(ctx, message, s, now)
}

func (l *Limiter) reserve(ctx context.Context, message string, s Subject, now time.Time) (Decision, error) {
	loc, err := l.location(s.TimeZone)
	if err != nil {
		return Decision{}, err
	}
	if s.User == "" {
		return Decision{}, errors.New("capping: Subject.User is required")
	}
	if until, ok := l.inQuietHours(&s, now, loc); ok {
		if l.quiet.Drop {
			return Decision{CappedBy: "quiet hours"}, nil
		}
		return Decision{CappedBy: "quiet hours", DeferUntil: until}, nil
	}
	var buf [6]planItem
	p := l.plan(buf[:], &s, now, loc)
	if len(p.items) == 0 {
		return Decision{Allowed: true}, nil
	}
	id := l.newID(s.User)
	if message != "" {
		id = messageID(message, s.User)
	}
	var failed int
	if ms, ok := l.store.(*MemoryStore); ok {
		failed, err = l.reserveMemory(ctx, ms, id, &s, &p, now)
	} else {
		failed, err = l.store.Reserve(ctx, id, p.checks(&s), now, now.Add(l.cfg.Lease))
	}
	if err != nil {
		return l.storeDown(ctx, id, &s, &p, now, err)
	}
	if failed < 0 {
		return Decision{Allowed: true, Reservation: id}, nil
	}
	it := &p.items[failed]
	d := Decision{CappedBy: it.rule.Name}
	d.DeferUntil = l.nextFree(ctx, p.check(&s, failed), it.rule, it.end)
	return d, nil
}

func (l *Limiter) storeDown(ctx context.Context, id string, s *Subject, p *plan, now time.Time, cause error) (Decision, error) {
	l.cfg.Logger.Warn("capping: store unavailable", "policy", l.cfg.OnStoreDown, "err", cause)
	if l.cfg.OnStoreDown == AllowAndJournal {
		if err := l.cfg.Journal.Append(ctx, JournalEntry{ID: id, Keys: p.keys(s), At: now}); err == nil {
			return Decision{Allowed: true, Journaled: true}, nil
		}
	}
	return Decision{CappedBy: "store unavailable", DeferUntil: now.Add(l.cfg.RetryDelay)}, nil
}

// nextFree is when a full counter frees a slot: the oldest counted slot's
// expiry for a rolling window, the window's end for a calendar one.
func (l *Limiter) nextFree(ctx context.Context, c Check, r *rule, end time.Time) time.Time {
	if !end.IsZero() {
		return end
	}
	slots, err := l.store.Slots(ctx, c.Key, c.Since)
	if err != nil || len(slots) < r.Limit {
		return time.Time{}
	}
	// With n counted and room for Limit, the (n-Limit+1)-th oldest must leave.
	return slots[len(slots)-r.Limit].At.Add(r.Window.rolling)
}

func (l *Limiter) inQuietHours(s *Subject, now time.Time, loc *time.Location) (time.Time, bool) {
	q := l.quiet
	if q == nil || (s.Transactional && !q.IncludeTransactional) || (q.channels != nil && !q.channels[s.Channel]) {
		return time.Time{}, false
	}
	t := now.In(loc)
	m := t.Hour()*60 + t.Minute()
	var in bool
	if q.start < q.end {
		in = m >= q.start && m < q.end
	} else {
		in = m >= q.start || m < q.end
	}
	if !in {
		return time.Time{}, false
	}
	end := time.Date(t.Year(), t.Month(), t.Day(), q.end/60, q.end%60, 0, 0, loc)
	if !end.After(t) {
		end = time.Date(t.Year(), t.Month(), t.Day()+1, q.end/60, q.end%60, 0, 0, loc)
	}
	return end, true
}

// Commit makes a reservation count as sent for good.
func (l *Limiter) Commit(ctx context.Context, reservation string) error {
	if reservation == "" {
		return nil
	}
	return l.store.Commit(ctx, reservation)
}

// Release gives a reservation back after a permanent failure. After the
// lease it returns ErrLeaseExpired and the slot keeps counting.
func (l *Limiter) Release(ctx context.Context, reservation string, now time.Time) error {
	if reservation == "" {
		return nil
	}
	return l.store.Release(ctx, reservation, now)
}

// Send is a past send, for Reconcile.
type Send struct {
	// ID identifies the send (a message or job ID) so reconciling twice
	// counts it once.
	ID      string
	Subject Subject
	At      time.Time
}

// Reconcile rebuilds counters from past sends (the retry queue's
// completed jobs, a provider's logs) after the store was down: each send is
// counted in every rule that matches it, at its time, once.
func (l *Limiter) Reconcile(ctx context.Context, sends []Send) error {
	for _, s := range sends {
		loc, err := l.location(s.Subject.TimeZone)
		if err != nil {
			return err
		}
		p := l.plan(nil, &s.Subject, s.At, loc)
		if len(p.items) == 0 {
			continue
		}
		if err := l.store.Add(ctx, s.ID, p.keys(&s.Subject), s.At); err != nil {
			return err
		}
	}
	return nil
}

// ReplayJournal adds the journal's entries to the store: call it when the
// store is back after AllowAndJournal decisions.
func (l *Limiter) ReplayJournal(ctx context.Context, entries []JournalEntry) error {
	for _, e := range entries {
		if err := l.store.Add(ctx, e.ID, e.Keys, e.At); err != nil {
			return err
		}
	}
	return nil
}

// Usage is a counter's state for introspection.
type Usage struct {
	Rule     string
	Key      string
	Count    int
	Limit    int
	NextFree time.Time // zero when a slot is free now
}

// Usage reports, for each rule that matches s at now, how many slots are
// taken and when the next frees.
func (l *Limiter) Usage(ctx context.Context, s Subject, now time.Time) ([]Usage, error) {
	loc, err := l.location(s.TimeZone)
	if err != nil {
		return nil, err
	}
	var buf [6]planItem
	p := l.plan(buf[:], &s, now, loc)
	out := make([]Usage, 0, len(p.items))
	for i := range p.items {
		c, r := p.check(&s, i), p.items[i].rule
		slots, err := l.store.Slots(ctx, c.Key, c.Since)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStoreDown, err)
		}
		u := Usage{Rule: r.Name, Key: c.Key, Count: len(slots), Limit: c.Limit}
		if len(slots) >= c.Limit {
			u.NextFree = l.nextFree(ctx, c, r, p.items[i].end)
		}
		out = append(out, u)
	}
	return out, nil
}

// Rules returns the rule names, in order.
func (l *Limiter) Rules() []string {
	out := make([]string, len(l.rules))
	for i := range l.rules {
		out[i] = l.rules[i].Name
	}
	return slices.Clip(out)
}

// messageID is the reservation ID of a message for user: stable, short,
// free of "|" before the user's part.
// messagePrefix starts the reservation IDs ReserveFor derives from a
// message.
const messagePrefix = "m:"

func messageID(message, user string) string {
	sum := sha256.Sum256([]byte(message))
	return messagePrefix + base64.RawURLEncoding.EncodeToString(sum[:16]) + "|" + user
}

// newID makes a reservation ID that names its user after a "|", so stores
// can place it with the user's counters.
func (l *Limiter) newID(user string) string {
	b, _ := l.idBlocks.Get().(*idBlock)
	if b == nil {
		b = new(idBlock)
	}
	if b.next == b.end {
		b.end = l.idSeq.Add(idBlockSize)
		b.next = b.end - idBlockSize
	}
	n := b.next
	b.next++
	l.idBlocks.Put(b)
	var buf [20]byte
	return l.idPrefix + string(strconv.AppendUint(buf[:0], n, 36)) + "|" + user
}

// idBlock is a range of reservation sequence numbers one goroutine takes
// from at a time (a block dropped by the pool leaves a gap, no repeat).
type idBlock struct{ next, end uint64 }

const idBlockSize = 256
