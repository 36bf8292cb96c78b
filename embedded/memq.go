package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
)

// qentry is a waiting job in memory: 24 bytes (the row itself stays in
// the file).
type qentry struct {
	id    int64
	runAt int64 // nanoseconds
	prio  int32
	// sched: in a lane's ready heap, the job is still scheduled (state 2)
	// in the file: it came due and was moved over in memory only, so the
	// ready window must keep it (reading the file's ready jobs back would
	// not find it).
	sched bool
}

// prio32 clamps a job's priority to the 32 bits a qentry keeps.
func prio32(p int) int32 {
	return int32(max(min(p, 1<<31-1), -1<<31))
}

// jobHeap is a binary heap of waiting jobs: by priority (descending),
// then RunAt, then ID for a lane's ready jobs; by RunAt then ID for its
// scheduled ones. Written out rather than through container/heap to keep
// entries unboxed.
type jobHeap struct {
	e          []qentry
	byPriority bool
}

func (h *jobHeap) len() int { return len(h.e) }

func (h *jobHeap) less(a, b *qentry) bool {
	if h.byPriority && a.prio != b.prio {
		return a.prio > b.prio
	}
	if a.runAt != b.runAt {
		return a.runAt < b.runAt
	}
	return a.id < b.id
}

func (h *jobHeap) push(e qentry) {
	h.e = append(h.e, e)
	h.up(len(h.e) - 1)
}

func (h *jobHeap) pop() qentry {
	top := h.e[0]
	last := len(h.e) - 1
	h.e[0] = h.e[last]
	h.e = h.e[:last]
	if last > 0 {
		h.down(0)
	}
	if cap(h.e) > 1024 && len(h.e) < cap(h.e)/4 {
		// A drained backlog gives its memory back.
		h.e = append(make([]qentry, 0, cap(h.e)/2), h.e...)
	}
	return top
}

func (h *jobHeap) init() {
	for i := len(h.e)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *jobHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(&h.e[i], &h.e[p]) {
			return
		}
		h.e[i], h.e[p] = h.e[p], h.e[i]
		i = p
	}
}

func (h *jobHeap) down(i int) {
	n := len(h.e)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(&h.e[r], &h.e[l]) {
			m = r
		}
		if !h.less(&h.e[m], &h.e[i]) {
			return
		}
		h.e[i], h.e[m] = h.e[m], h.e[i]
		i = m
	}
}

// laneQ is one lane's waiting jobs and pause switch.
//
// Memory holds a window of each lane's waiting jobs, not all of them: a
// backlog of millions costs the window, and Open reads only the window.
// When a heap's window is "over", the file holds more of the lane's jobs
// in that state than memory does, and every one of them sorts after the
// heap's watermark (wm); they are read back in order, past the
// watermark, when memory runs low (refill). A job that joins a lane past
// the watermark is left in the file and counted (off); one before it
// joins the heap. Keeping this invariant is what lets a refill read
// "after wm" and find exactly the jobs memory does not have.
type laneQ struct {
	ready, sched jobHeap
	rw, sw       window // of ready and of sched
	paused       bool
}

// window is the part of a lane's jobs in one state that memory holds.
type window struct {
	over bool   // the file holds more than memory: the rest sorts after wm
	wm   qentry // the watermark
	off  int    // jobs in the file beyond memory
	gen  int    // bumped when a trim moves the watermark back
	// refilled is closed when the refill in flight (if not nil) is done.
	refilled chan struct{}
}

// side returns one of the lane's heaps and its window.
func (l *laneQ) side(sched bool) (*jobHeap, *window) {
	if sched {
		return &l.sched, &l.sw
	}
	return &l.ready, &l.rw
}

// add puts a job the file holds in the given state (ready or scheduled)
// in the lane: in memory if it sorts before the watermark (or the window
// is not over), else counted as in the file only. A heap past twice the
// window is trimmed back to it.
func (l *laneQ) add(e qentry, sched bool, size int) {
	h, w := l.side(sched)
	if w.over && !e.sched && h.less(&w.wm, &e) {
		w.off++
		return
	}
	h.push(e)
	if h.len() > 2*size {
		l.trim(sched, size)
	}
}

// waiting counts the lane's waiting jobs, in memory and in the file.
func (l *laneQ) waiting() int {
	return l.ready.len() + l.sched.len() + l.rw.off + l.sw.off
}

// trim keeps the window's first entries of a heap and leaves the rest to
// the file, moving the watermark back to the last one kept. Ready entries
// still scheduled in the file are kept whatever their place (a refill of
// ready jobs would not find them).
func (l *laneQ) trim(sched bool, size int) {
	h, w := l.side(sched)
	slices.SortFunc(h.e, func(a, b qentry) int {
		if h.less(&a, &b) {
			return -1
		}
		return 1
	})
	kept, n, dropped := h.e[:0], 0, false
	var last qentry
	for _, e := range h.e {
		switch {
		case e.sched && !sched:
			kept = append(kept, e)
		case n < size:
			kept = append(kept, e)
			last = e
			n++
		default:
			w.off++
			dropped = true
		}
	}
	// A sorted array is a heap; a shrunk one gives its memory back.
	h.e = append(make([]qentry, 0, len(kept)+size/4), kept...)
	if dropped {
		w.over, w.wm = true, last
		w.gen++
	}
}

// leaseRec is a running job's lease, held in memory only.
type leaseRec struct {
	id, runAt        int64
	prio             int32
	sched            bool // still scheduled in the file (see qentry)
	lane             string
	token            int64
	until, claimedAt int64
	attempt          int
	maxAttempts      int
	loaded           bool // the job's row is read: attempt and maxAttempts are known
	pending          bool // an outcome (Finish or Rescue) is being written
}

// claimLogSuffix names the claim log beside the store's file.
const claimLogSuffix = "-claims"

// claimLog records each claim (job ID and lease token, 16 bytes) with one
// write(2) per Claim call and no fsync: a process that dies keeps what it
// wrote in the kernel's page cache, so the next Open knows which jobs were
// running and counts their attempt (DB.Recovered), as a written claim
// would. A power cut may lose the log's tail: those jobs run again without
// the attempt counted, which the Store contract allows (claims need not be
// durable) and the messages' deadlines bound.
type claimLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	f    *os.File
	path string
	size int64
	buf  []byte
}

// claimLogRotate is the size at which the log is rewritten with only the
// leases still running.
var claimLogRotate int64 = 4 << 20

func openClaimLog(path string, log *slog.Logger) (*claimLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded: claim log: %w", err)
	}
	return &claimLog{f: f, path: path, log: log}, nil
}

// readClaimLog returns the last token claimed for each job in the log.
func readClaimLog(path string) (map[int64]int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: claim log: %w", err)
	}
	out := map[int64]int64{}
	for ; len(b) >= 16; b = b[16:] {
		id, token := int64(binary.LittleEndian.Uint64(b)), int64(binary.LittleEndian.Uint64(b[8:]))
		if id > 0 && token > out[id] {
			out[id] = token
		}
	}
	return out, nil
}

func appendRec(buf []byte, r *leaseRec) []byte {
	buf = binary.LittleEndian.AppendUint64(buf, uint64(r.id))
	return binary.LittleEndian.AppendUint64(buf, uint64(r.token))
}

// append logs recs and, past claimLogRotate, rewrites the log with the
// leases running returns. The store's mutex is not held: the log has its
// own (taken before the store's, never the other way).
func (c *claimLog) append(recs []*leaseRec, running func() []*leaseRec) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return errStoreClosed
	}
	c.buf = c.buf[:0]
	for _, r := range recs {
		c.buf = appendRec(c.buf, r)
	}
	if _, err := c.f.Write(c.buf); err != nil {
		return fmt.Errorf("embedded: claim log: %w", err)
	}
	c.size += int64(len(c.buf))
	if c.size >= claimLogRotate {
		if err := c.rotate(running()); err != nil {
			// The log keeps growing; what it says stays true.
			c.log.Warn("embedded: rotating the claim log failed; it keeps growing", "err", err)
		}
	}
	return nil
}

// rotate rewrites the log with the running leases only (under c.mu). A
// rename is atomic for a process that dies; a power cut may leave either
// log, or the new one empty, which loses at most what a cut may lose
// anyway.
func (c *claimLog) rotate(running []*leaseRec) error {
	tmp := c.path + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("embedded: claim log: %w", err)
	}
	buf := c.buf[:0]
	for _, r := range running {
		buf = appendRec(buf, r)
	}
	if _, err := f.Write(buf); err != nil {
		_ = f.Close()
		return fmt.Errorf("embedded: claim log: %w", err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		_ = f.Close()
		return fmt.Errorf("embedded: claim log: %w", err)
	}
	_ = c.f.Close()
	c.f, c.size, c.buf = f, int64(len(buf)), buf
	return nil
}

func (c *claimLog) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	if errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}
