// Package smstest fakes Twilio's Messages API on loopback for host apps'
// tests: the real twilio-go client (through sms/twilio) is pointed at it,
// it checks the account's Basic credentials, records messages, and can be
// scripted to answer Twilio's error bodies. PostStatus sends a status
// callback signed as Twilio signs them.
package smstest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/sms"
)

// Fault is a scripted Twilio error answer.
type Fault struct {
	Status     int    // HTTP status, e.g. 400
	Code       int    // Twilio error code, e.g. 21211
	Message    string // Twilio's message
	RetryAfter string // sent as Retry-After when not empty
}

// Message is one message the fake accepted or refused.
type Message struct {
	SID                 string
	To, From            string
	MessagingServiceSID string
	Body                string
	StatusCallback      string
	ValidityPeriod      string
	Status              int // what the fake answered
	Code                int
}

// Server is a fake Twilio Messages API.
type Server struct {
	srv   *httptest.Server
	sid   string
	token string

	mu       sync.Mutex
	messages []Message
	byTo     map[string]Fault
	next     []Fault
}

// NewServer starts a fake for the test, with its own account SID and auth
// token (alphanumeric, as Twilio's are).
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{sid: "AC" + randHex(16), token: randHex(16), byTo: map[string]Fault{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(s.srv.Close)
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// URL is the fake's base URL.
func (s *Server) URL() string { return s.srv.URL }

// AccountSID and AuthToken are the credentials the fake accepts.
func (s *Server) AccountSID() string      { return s.sid }
func (s *Server) AuthToken() secret.Value { return secret.String(s.token) }

// FailTo answers every message to number with f until Heal.
func (s *Server) FailTo(number string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byTo[number] = f
}

// FailNext answers the next n messages with f.
func (s *Server) FailNext(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.next = append(s.next, f)
	}
}

// Heal removes every scripted fault.
func (s *Server) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byTo, s.next = map[string]Fault{}, nil
}

// Messages returns every request the fake answered.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Accepted returns the messages the fake accepted (201).
func (s *Server) Accepted() []Message {
	var out []Message
	for _, m := range s.Messages() {
		if m.Status == http.StatusCreated {
			out = append(out, m)
		}
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fail := func(f Fault) {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.WriteHeader(f.Status)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"code": f.Code, "message": f.Message, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", f.Code), "status": f.Status,
		})
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user != s.sid || pass != s.token {
		fail(Fault{Status: 401, Code: 20003, Message: "Authenticate"})
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/2010-04-01/Accounts/"+s.sid+"/Messages.json" {
		fail(Fault{Status: 404, Code: 20404, Message: "The requested resource was not found"})
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(Fault{Status: 400, Code: 21602, Message: "unparsable form"})
		return
	}
	m := Message{
		To: r.PostForm.Get("To"), From: r.PostForm.Get("From"), MessagingServiceSID: r.PostForm.Get("MessagingServiceSid"),
		Body: r.PostForm.Get("Body"), StatusCallback: r.PostForm.Get("StatusCallback"), ValidityPeriod: r.PostForm.Get("ValidityPeriod"),
	}
	s.mu.Lock()
	f, scripted := s.byTo[m.To]
	if !scripted && len(s.next) > 0 {
		f, scripted = s.next[0], true
		s.next = s.next[1:]
	}
	s.mu.Unlock()
	switch {
	case scripted:
	case sms.ValidateNumber(m.To) != nil:
		f, scripted = Fault{Status: 400, Code: 21211, Message: "Invalid 'To' Phone Number: " + m.To}, true
	case m.Body == "":
		f, scripted = Fault{Status: 400, Code: 21602, Message: "Message body is required."}, true
	case m.From == "" && m.MessagingServiceSID == "":
		f, scripted = Fault{Status: 400, Code: 21603, Message: "A 'From' or 'MessagingServiceSid' parameter is required"}, true
	}
	if scripted {
		m.Status, m.Code = f.Status, f.Code
		s.record(m)
		fail(f)
		return
	}
	m.SID = "SM" + randHex(16)
	m.Status = http.StatusCreated
	s.record(m)
	w.WriteHeader(http.StatusCreated)
	seg := sms.Segments(m.Body)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"sid": m.SID, "account_sid": s.sid, "to": m.To, "from": m.From, "messaging_service_sid": nilIfEmpty(m.MessagingServiceSID),
		"body": m.Body, "status": "queued", "direction": "outbound-api", "num_segments": fmt.Sprint(seg.Segments),
		"num_media": "0", "api_version": "2010-04-01", "date_created": time.Now().UTC().Format(time.RFC1123Z),
		"error_code": nil, "error_message": nil,
		"uri": "/2010-04-01/Accounts/" + s.sid + "/Messages/" + m.SID + ".json",
	})
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, m)
}

// Sign computes X-Twilio-Signature for a POST of params to fullURL.
func Sign(authToken, fullURL string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteString(params.Get(k))
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// PostStatus posts a status callback for a message to callbackURL, signed
// with authToken as Twilio would, and returns the HTTP status.
func PostStatus(tb testing.TB, callbackURL string, authToken secret.Value, params url.Values) int {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, callbackURL, strings.NewReader(params.Encode()))
	if err != nil {
		tb.Fatalf("smstest: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", Sign(authToken.Reveal(), callbackURL, params))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("smstest: posting status: %v", err)
	}
	_ = res.Body.Close()
	return res.StatusCode
}

// StatusParams builds the form Twilio posts for a status change.
func (s *Server) StatusParams(m Message, status string, errorCode int) url.Values {
	v := url.Values{
		"MessageSid": {m.SID}, "SmsSid": {m.SID}, "AccountSid": {s.sid}, "From": {m.From}, "To": {m.To},
		"MessageStatus": {status}, "SmsStatus": {status}, "ApiVersion": {"2010-04-01"},
	}
	if errorCode != 0 {
		v.Set("ErrorCode", fmt.Sprint(errorCode))
	}
	return v
}
