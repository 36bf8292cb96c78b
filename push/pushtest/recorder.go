package pushtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/push"
)

// Recorder is a push.Sender that records messages instead of sending them,
// for tests that need no network. It can be scripted to fail. It is safe
// for concurrent use.
type Recorder struct {
	provider push.Provider

	mu      sync.Mutex
	sent    []push.Message
	byToken map[string]error
	next    []error
	seq     int
}

var _ push.Sender = (*Recorder)(nil)

// NewRecorder returns a recorder whose receipts name provider.
func NewRecorder(provider push.Provider) *Recorder {
	return &Recorder{provider: provider, byToken: map[string]error{}}
}

// Send records m, or returns the scripted error.
func (r *Recorder) Send(ctx context.Context, m *push.Message) (push.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return push.Receipt{}, &push.Error{Provider: r.provider, Kind: push.ErrUnavailable, Err: err}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err, ok := r.byToken[m.Token]; ok {
		return push.Receipt{}, err
	}
	if len(r.next) > 0 {
		err := r.next[0]
		r.next = r.next[1:]
		return push.Receipt{}, err
	}
	r.sent = append(r.sent, *m)
	r.seq++
	return push.Receipt{Provider: r.provider, ID: fmt.Sprintf("rec-%d", r.seq), At: time.Now()}, nil
}

// FailToken makes every send to token return err.
func (r *Recorder) FailToken(token string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byToken[token] = err
}

// FailNext makes the next n sends return err.
func (r *Recorder) FailNext(n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range n {
		r.next = append(r.next, err)
	}
}

// Sent returns the messages recorded so far.
func (r *Recorder) Sent() []push.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]push.Message(nil), r.sent...)
}

// Reset forgets messages and scripted errors.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent, r.next, r.byToken = nil, nil, map[string]error{}
}
