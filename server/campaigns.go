package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/heraldhq/herald/audience"
	"github.com/heraldhq/herald/campaign"
	"github.com/heraldhq/herald/checkpoint"
)

// Audiences and campaigns: stored audiences are uploaded by name
// (idempotent by upload ID); a campaign names one, and this process fans
// it out in the background, its cursor checkpointed with each page's
// messages (a crash resumes it: POST /v1/campaigns/{key}/resume).

func (s *Server) uploadMembers(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UploadID string            `json:"upload_id"`
		Members  []audience.Member `json:"members"`
	}
	if !decode(w, r, 16<<20, &body) {
		return
	}
	switch {
	case body.UploadID == "" || len(body.UploadID) > 200:
		fail(w, http.StatusBadRequest, "upload_id: 1 to 200 bytes (a retry with the same ID changes nothing)", "upload_id")
		return
	case len(body.Members) == 0 || len(body.Members) > 10000:
		fail(w, http.StatusBadRequest, "members: 1 to 10,000 per upload", "members")
		return
	}
	for _, m := range body.Members {
		if m.User == "" || len(m.User) > 200 {
			fail(w, http.StatusBadRequest, "members[].user: 1 to 200 bytes", "members")
			return
		}
	}
	dup, err := s.st.audiences.Upload(r.Context(), r.PathValue("name"), body.UploadID, body.Members)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "not stored; retry with the same upload_id", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"duplicate": dup, "members": len(body.Members)})
}

func (s *Server) removeMembers(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Users []string `json:"users"`
	}
	if !decode(w, r, 4<<20, &body) {
		return
	}
	if len(body.Users) == 0 || len(body.Users) > 10000 {
		fail(w, http.StatusBadRequest, "users: 1 to 10,000", "users")
		return
	}
	if err := s.st.audiences.Remove(r.Context(), r.PathValue("name"), body.Users); err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"removed": len(body.Users)})
}

func (s *Server) audienceSize(w http.ResponseWriter, r *http.Request) {
	n, err := s.st.audiences.Size(r.Context(), r.PathValue("name"))
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return
	}
	reply(w, http.StatusOK, map[string]any{"audience": r.PathValue("name"), "members": n})
}

// createCampaign is POST /v1/campaigns (a campaign.Campaign): created
// once by key, then fanned out by this process.
func (s *Server) createCampaign(w http.ResponseWriter, r *http.Request) {
	var c campaign.Campaign
	if !decode(w, r, 1<<20, &c) {
		return
	}
	st, err := s.campaigns.Create(r.Context(), c)
	var ie *campaign.InvalidError
	switch {
	case errors.As(err, &ie):
		fail(w, http.StatusBadRequest, ie.Error(), ie.Field)
		return
	case errors.Is(err, campaign.ErrConflict):
		fail(w, http.StatusConflict, "this key names another campaign", "Key")
		return
	case err != nil:
		fail(w, http.StatusServiceUnavailable, "not created; retry with the same key", "")
		return
	}
	s.run(c.Key)
	reply(w, http.StatusAccepted, map[string]any{"key": c.Key, "state": st.State})
}

// run fans a campaign out in the background (once per key at a time in
// this process; the campaign's lease keeps other processes out). It
// reports whether it started a run.
func (s *Server) run(key string) bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.runs[key] != nil {
		return false
	}
	ctx, cancel := context.WithCancel(s.runCtx)
	s.runs[key] = cancel
	go func() {
		defer func() {
			s.runMu.Lock()
			delete(s.runs, key)
			s.runMu.Unlock()
			cancel()
		}()
		if err := s.campaigns.Run(ctx, key); err != nil && !errors.Is(err, campaign.ErrStopped) && !errors.Is(err, campaign.ErrElsewhere) && ctx.Err() == nil {
			s.log.Warn("heraldd: campaign fan-out stopped", "campaign", key, "err", err)
		}
	}()
	return true
}

func (s *Server) stopRuns() {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	for _, cancel := range s.runs {
		cancel()
	}
}

// listCampaigns is GET /v1/campaigns?after=&limit=: the campaigns in key
// order, a page at a time (limit 1 to 500, default 100); next is the
// after of the next page, "" on the last.
func (s *Server) listCampaigns(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			fail(w, http.StatusBadRequest, "limit: 1 to 500", "limit")
			return
		}
		limit = n
	}
	list, err := s.campaigns.List(r.Context(), r.URL.Query().Get("after"), limit)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
		return
	}
	next := ""
	if len(list) == limit {
		next = list[limit-1].Campaign.Key
	}
	reply(w, http.StatusOK, map[string]any{"campaigns": list, "next": next})
}

func (s *Server) campaignProgress(w http.ResponseWriter, r *http.Request) {
	p, err := s.campaigns.Progress(r.Context(), r.PathValue("key"), s.outbox)
	switch {
	case errors.Is(err, campaign.ErrNotFound) || errors.Is(err, checkpoint.ErrNotFound):
		fail(w, http.StatusNotFound, "no such campaign", "key")
	case err != nil:
		fail(w, http.StatusServiceUnavailable, "store unavailable", "")
	default:
		reply(w, http.StatusOK, p)
	}
}

// campaignAction is pause, resume (also after a restart) or cancel.
func (s *Server) campaignAction(w http.ResponseWriter, r *http.Request) {
	key, ctx := r.PathValue("key"), r.Context()
	var err error
	switch r.PathValue("action") {
	case "pause":
		err = s.campaigns.Pause(ctx, key)
	case "resume":
		if err = s.campaigns.Resume(ctx, key); err == nil {
			s.run(key)
		}
	case "cancel":
		err = s.campaigns.Cancel(ctx, key)
	default:
		fail(w, http.StatusNotFound, "action: pause, resume or cancel", "action")
		return
	}
	switch {
	case errors.Is(err, campaign.ErrNotFound) || errors.Is(err, checkpoint.ErrNotFound):
		fail(w, http.StatusNotFound, "no such campaign", "key")
	case err != nil:
		fail(w, http.StatusConflict, err.Error(), "")
	default:
		st, _ := s.campaigns.Status(ctx, key)
		reply(w, http.StatusOK, map[string]any{"key": key, "state": st.State})
	}
}
