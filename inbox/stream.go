package inbox

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// inApp answers the in-app messages to show now.
func (c *HandlerConfig) inApp(w http.ResponseWriter, r *http.Request) {
	u, ok := c.user(w, r)
	if !ok {
		return
	}
	shown, err := c.InApp.ShowInApp(r.Context(), u)
	if err != nil && len(shown) == 0 {
		c.Logger.Warn("inbox: in-app", "err", err)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "try again"})
		return
	}
	if shown == nil {
		shown = []Shown{}
	}
	// Messages decided before an error are answered: they were counted
	// as displayed, and the client must show them.
	reply(w, http.StatusOK, map[string]any{"messages": shown})
}

// react records a reaction to a displayed in-app message.
func (c *HandlerConfig) react(w http.ResponseWriter, r *http.Request) {
	u, ok := c.user(w, r)
	if !ok {
		return
	}
	re := Reaction(r.PathValue("reaction"))
	if re != Clicked && re != Dismissed {
		reply(w, http.StatusNotFound, map[string]string{"error": "reaction: clicked or dismissed", "field": "reaction"})
		return
	}
	found, err := c.InApp.ReactInApp(r.Context(), u, r.PathValue("id"), re)
	switch {
	case err != nil:
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "try again"})
	case !found:
		reply(w, http.StatusNotFound, map[string]string{"error": "no such displayed message"})
	default:
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	}
}

// stream is a server-sent-events stream of the user's counts: one event
// at the start, one each time they change ("counts"), and "inapp" when a
// new item may have made in-app messages due. It wakes on the Notifier
// and polls every PollInterval (items written by other processes), and
// ends after StreamFor (EventSource and the web SDK reconnect).
func (c *HandlerConfig) stream(w http.ResponseWriter, r *http.Request) {
	u, ok := c.user(w, r)
	if !ok {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		reply(w, http.StatusInternalServerError, map[string]string{"error": "streaming not supported here"})
		return
	}
	var wake <-chan struct{}
	if c.Notifier != nil {
		ch, stop := c.Notifier.Subscribe(u)
		defer stop()
		wake = ch
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.StreamFor)
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	tick := time.NewTicker(c.PollInterval)
	defer tick.Stop()
	last := Counts{Unread: -1}
	for {
		n, err := c.Store.Counts(ctx, u, c.Now())
		if err == nil && n != last {
			last = n
			fmt.Fprintf(w, "event: counts\ndata: {\"unread\":%d,\"unseen\":%d}\n\n", n.Unread, n.Unseen)
		}
		fl.Flush()
		select {
		case <-ctx.Done():
			return
		case <-wake:
			fmt.Fprint(w, "event: inapp\ndata: {}\n\n")
		case <-tick.C:
			fmt.Fprint(w, ": ping\n\n")
		}
	}
}
