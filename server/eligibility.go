package server

import (
	"cmp"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/eligibility"
)

// The suppression list and preferences, checked for every message at the
// moment of sending. Providers feed the list (a token gone, a hard
// bounce, STOP); the host adds and removes recipients and records users'
// choices here. Recipients travel in bodies, never in URLs (which end up
// in access logs), and are answered masked.

var channels = []string{"push", "email", "sms"}

// recipientBody names one recipient of a channel.
type recipientBody struct {
	Channel   string `json:"channel"`
	Recipient string `json:"recipient"`
	Reason    string `json:"reason,omitempty"`
}

// readRecipient decodes and checks a recipientBody.
func readRecipient(w http.ResponseWriter, r *http.Request) (recipientBody, bool) {
	var b recipientBody
	if !decode(w, r, 16<<10, &b) {
		return b, false
	}
	switch {
	case !slices.Contains(channels, b.Channel):
		fail(w, http.StatusBadRequest, "channel: push, email or sms", "channel")
	case strings.TrimSpace(b.Recipient) == "" || len(b.Recipient) > 4096:
		fail(w, http.StatusBadRequest, "recipient: a token, an address or a number (1 to 4,096 bytes)", "recipient")
	case len(b.Reason) > 200:
		fail(w, http.StatusBadRequest, "reason: at most 200 bytes", "reason")
	default:
		return b, true
	}
	return b, false
}

type suppressionView struct {
	Suppressed bool      `json:"suppressed"`
	Channel    string    `json:"channel"`
	Masked     string    `json:"masked"`
	Reason     string    `json:"reason,omitempty"`
	Source     string    `json:"source,omitempty"`
	At         time.Time `json:"at,omitzero"`
}

// suppress is POST /v1/suppressions: the host adds a recipient.
func (s *Server) suppress(w http.ResponseWriter, r *http.Request) {
	b, ok := readRecipient(w, r)
	if !ok {
		return
	}
	sup := eligibility.Suppression{Key: eligibility.RecipientKey(b.Channel, b.Recipient), Channel: b.Channel,
		Masked: eligibility.Mask(b.Channel, b.Recipient), Reason: cmp.Or(b.Reason, "the host's"), Source: "host", At: time.Now().UTC()}
	if err := s.st.eligibility.Suppress(r.Context(), sup); err != nil {
		s.log.Warn("heraldd: a suppression was not stored", "channel", sup.Channel, "recipient", sup.Masked, "err", err)
		fail(w, http.StatusServiceUnavailable, "not stored: retry", "")
		return
	}
	reply(w, http.StatusOK, suppressionView{Suppressed: true, Channel: sup.Channel, Masked: sup.Masked, Reason: sup.Reason, Source: sup.Source, At: sup.At})
}

// checkSuppression is POST /v1/suppressions/check.
func (s *Server) checkSuppression(w http.ResponseWriter, r *http.Request) {
	b, ok := readRecipient(w, r)
	if !ok {
		return
	}
	v, ok := s.suppression(w, r, b)
	if ok {
		reply(w, http.StatusOK, v)
	}
}

func (s *Server) suppression(w http.ResponseWriter, r *http.Request, b recipientBody) (suppressionView, bool) {
	sup, found, err := s.st.eligibility.Suppressed(r.Context(), eligibility.RecipientKey(b.Channel, b.Recipient))
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return suppressionView{}, false
	}
	v := suppressionView{Suppressed: found, Channel: b.Channel, Masked: eligibility.Mask(b.Channel, b.Recipient)}
	if found {
		v.Reason, v.Source, v.At = sup.Reason, sup.Source, sup.At
	}
	return v, true
}

// unsuppress is POST /v1/suppressions/remove (admin): a recipient that
// was suppressed may be messaged again (an address fixed, a number
// that texted START). It answers what was removed.
func (s *Server) unsuppress(w http.ResponseWriter, r *http.Request) {
	b, ok := readRecipient(w, r)
	if !ok {
		return
	}
	v, ok := s.suppression(w, r, b)
	if !ok {
		return
	}
	if err := s.st.eligibility.Unsuppress(r.Context(), eligibility.RecipientKey(b.Channel, b.Recipient)); err != nil {
		fail(w, http.StatusServiceUnavailable, "not removed: retry", "")
		return
	}
	s.log.Info("heraldd: a suppression was removed", "channel", v.Channel, "recipient", v.Masked, "was", v.Reason)
	v.Suppressed = false
	reply(w, http.StatusOK, v)
}

// setPreference is PUT /v1/users/{user}/preferences: a user's choice
// for a channel ("channel:email") or a category ("category:promotions").
func (s *Server) setPreference(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Topic    string `json:"topic"`
		OptedOut *bool  `json:"opted_out"`
	}
	if !decode(w, r, 16<<10, &b) {
		return
	}
	user := r.PathValue("user")
	kind, name, _ := strings.Cut(b.Topic, ":")
	switch {
	case user == "" || len(user) > 200:
		fail(w, http.StatusBadRequest, "user: 1 to 200 bytes", "user")
		return
	case !(kind == "channel" && slices.Contains(channels, name)) && !(kind == "category" && name != "" && len(name) <= 100):
		fail(w, http.StatusBadRequest, "topic: channel:push, channel:email, channel:sms or category:<name> (1 to 100 bytes)", "topic")
		return
	case b.OptedOut == nil:
		fail(w, http.StatusBadRequest, "opted_out: true or false", "opted_out")
		return
	}
	p := eligibility.Preference{User: user, Topic: b.Topic, OptedOut: *b.OptedOut, At: time.Now().UTC()}
	if err := s.st.eligibility.SetPreference(r.Context(), p); err != nil {
		fail(w, http.StatusServiceUnavailable, "not stored: retry", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"user": p.User, "topic": p.Topic, "opted_out": p.OptedOut, "at": p.At})
}
