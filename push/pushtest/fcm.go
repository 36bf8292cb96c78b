package pushtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/heraldhq/herald/secret"
)

// FCMOptions configures NewFCM.
type FCMOptions struct {
	// ProjectID the fake serves. Default "pushtest-project".
	ProjectID string
	// TLS serves https with a certificate of the fake's own CA (see
	// HTTPClient); default plain http on loopback.
	TLS bool
}

// FCMRequest is one messages:send request the fake received.
type FCMRequest struct {
	// Message is the decoded "message" object.
	Message      map[string]any
	Token        string
	Topic        string
	Condition    string
	ValidateOnly bool
	// Authorization is the request's header.
	Authorization string
	// Status and ErrorCode are what the fake answered.
	Status    int
	ErrorCode string
}

// FCMServer is a fake of FCM's HTTP v1 API (and of Google's OAuth token
// endpoint, for service-account credentials) on loopback.
type FCMServer struct {
	Faults

	srv       *httptest.Server
	projectID string
	access    string

	mu           sync.Mutex
	requests     []FCMRequest
	tokenGrants  int
	refuseTokens string
	seq          int
}

// NewFCM starts a fake FCM for the test.
func NewFCM(tb testing.TB, opts *FCMOptions) *FCMServer {
	tb.Helper()
	s := &FCMServer{projectID: "pushtest-project", access: "pushtest-access-" + newUUID()}
	if opts != nil && opts.ProjectID != "" {
		s.projectID = opts.ProjectID
	}
	if opts != nil && opts.TLS {
		s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	} else {
		s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	}
	tb.Cleanup(s.srv.Close)
	return s
}

// HTTPClient is an *http.Client that trusts the fake (with TLS).
func (s *FCMServer) HTTPClient() *http.Client { return s.srv.Client() }

// RefuseTokens makes the token endpoint answer 400 with the OAuth error
// code (invalid_grant, unauthorized_client, ...) from now on; "" grants
// tokens again.
func (s *FCMServer) RefuseTokens(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseTokens = code
}

// URL is the fake's base URL.
func (s *FCMServer) URL() string { return s.srv.URL }

// ProjectID is the project the fake serves.
func (s *FCMServer) ProjectID() string { return s.projectID }

// AccessToken is the OAuth access token the fake grants and accepts.
func (s *FCMServer) AccessToken() string { return s.access }

// TokenSource yields the OAuth token the fake accepts.
func (s *FCMServer) TokenSource() oauth2.TokenSource {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: s.access, TokenType: "Bearer"})
}

// ServiceAccountJSON makes a service-account key whose token_uri is the
// fake, which grants the access token it accepts: the SDK's real credential
// path (a signed JWT exchanged for a token) runs against it.
func (s *FCMServer) ServiceAccountJSON(tb testing.TB) secret.Value {
	tb.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("pushtest: RSA key: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("pushtest: RSA key: %v", err)
	}
	sa, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     s.projectID,
		"private_key_id": "pushtest-key",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "pushtest@" + s.projectID + ".iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      s.srv.URL + "/token",
	})
	return secret.New(sa)
}

// TokenGrants counts the OAuth tokens the fake granted.
func (s *FCMServer) TokenGrants() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenGrants
}

// Requests returns what the fake received so far.
func (s *FCMServer) Requests() []FCMRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]FCMRequest(nil), s.requests...)
}

// Delivered returns the requests the fake accepted.
func (s *FCMServer) Delivered() []FCMRequest {
	var out []FCMRequest
	for _, r := range s.Requests() {
		if r.Status == http.StatusOK {
			out = append(out, r)
		}
	}
	return out
}

// fcmStatus gives each FCM error code its HTTP status and Google status.
var fcmStatus = map[string]struct {
	http   int
	status string
}{
	"INVALID_ARGUMENT":       {400, "INVALID_ARGUMENT"},
	"UNREGISTERED":           {404, "NOT_FOUND"},
	"SENDER_ID_MISMATCH":     {403, "PERMISSION_DENIED"},
	"QUOTA_EXCEEDED":         {429, "RESOURCE_EXHAUSTED"},
	"UNAVAILABLE":            {503, "UNAVAILABLE"},
	"INTERNAL":               {500, "INTERNAL"},
	"THIRD_PARTY_AUTH_ERROR": {401, "UNAUTHENTICATED"},
}

func (s *FCMServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		s.mu.Lock()
		refuse := s.refuseTokens
		if refuse == "" {
			s.tokenGrants++
		}
		s.mu.Unlock()
		if refuse != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":%q,"error_description":"refused by the fake"}`, refuse)
			return
		}
		_ = r.ParseForm()
		if r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || r.Form.Get("assertion") == "" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"expires_in":3600,"token_type":"Bearer"}`, s.access)
		return
	}
	var req FCMRequest
	req.Authorization = r.Header.Get("Authorization")
	var body struct {
		Message      map[string]any `json:"message"`
		ValidateOnly bool           `json:"validate_only"`
	}
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	_ = json.Unmarshal(raw, &body)
	req.Message, req.ValidateOnly = body.Message, body.ValidateOnly
	req.Token, _ = body.Message["token"].(string)
	req.Topic, _ = body.Message["topic"].(string)
	req.Condition, _ = body.Message["condition"].(string)

	status, code, msg, retryAfter := s.judge(r, &req, raw)
	req.Status, req.ErrorCode = status, code
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.seq++
	seq := s.seq
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if status == http.StatusOK {
		fmt.Fprintf(w, `{"name":"projects/%s/messages/0:%d"}`, s.projectID, seq)
		return
	}
	w.WriteHeader(status)
	st := fcmStatus[code].status
	if code == "UNAUTHENTICATED" {
		st = code
	}
	if st == "" {
		st = "UNKNOWN"
	}
	e := map[string]any{"code": status, "message": msg, "status": st}
	if code != "" && code != "UNAUTHENTICATED" {
		e["details"] = []map[string]string{{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}

func (s *FCMServer) judge(r *http.Request, req *FCMRequest, raw []byte) (status int, code, msg, retryAfter string) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/projects/"+s.projectID+"/messages:send" {
		return 404, "", "Requested entity was not found.", ""
	}
	if req.Authorization != "Bearer "+s.access {
		s := http.StatusUnauthorized
		return s, "UNAUTHENTICATED", "Request had invalid authentication credentials.", ""
	}
	if f, ok := s.take(r.Context(), req.Token); ok {
		st := f.Status
		if st == 0 {
			st = fcmStatus[f.Reason].http
		}
		return st, f.Reason, "scripted failure " + f.Reason, f.RetryAfter
	}
	if req.Message == nil {
		return 400, "INVALID_ARGUMENT", "Invalid JSON payload received.", ""
	}
	targets := 0
	for _, t := range []string{req.Token, req.Topic, req.Condition} {
		if t != "" {
			targets++
		}
	}
	if targets != 1 {
		return 400, "INVALID_ARGUMENT", "Exactly one of token, topic or condition must be set.", ""
	}
	size := 0
	if d, ok := req.Message["data"].(map[string]any); ok {
		for k, v := range d {
			vs, ok := v.(string)
			if !ok {
				return 400, "INVALID_ARGUMENT", "Invalid value at 'message.data': data values must be strings.", ""
			}
			size += len(k) + len(vs)
		}
	}
	if n, ok := req.Message["notification"].(map[string]any); ok {
		for _, v := range n {
			vs, _ := v.(string)
			size += len(vs)
		}
	}
	if size > 4096 { // FCM's limit
		return 400, "INVALID_ARGUMENT", "Message too big: 4096 bytes max.", ""
	}
	if req.Token != "" && strings.ContainsAny(req.Token, " /") {
		return 400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", ""
	}
	_ = raw
	return 200, "", "", ""
}

// RegistrationToken returns a well-formed FCM registration token derived
// from name, for tests.
func RegistrationToken(name string) string {
	return "fcm-" + DeviceToken(name) + ":APA91b" + DeviceToken(name + "/2")[:40]
}
