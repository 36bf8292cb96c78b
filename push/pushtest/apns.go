package pushtest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/secret"
)

// APNsOptions configures NewAPNs. The zero value accepts any topic.
type APNsOptions struct {
	// Topics the credentials may push to (bundle IDs; the push-type
	// suffixes are allowed with them). Empty: any.
	Topics []string
	// MaxTokenAge rejects JWTs older than this with ExpiredProviderToken.
	// Default 1 hour, Apple's limit.
	MaxTokenAge time.Duration
}

// APNsRequest is one request the fake APNs received.
type APNsRequest struct {
	Token      string
	Topic      string
	PushType   string
	Priority   string
	CollapseID string
	Expiration string
	ApnsID     string
	// Auth is "token" or "certificate".
	Auth string
	// JWT is the provider token (token auth).
	JWT string
	// Payload is the decoded JSON body; Raw the bytes.
	Payload map[string]any
	Raw     []byte
	// RemoteAddr is the client's address (one per connection).
	RemoteAddr string
	// Status is what the fake answered.
	Status int
	Reason string
}

// APNsServer is a fake APNs: HTTP/2 over TLS on loopback.
type APNsServer struct {
	Faults

	srv    *httptest.Server
	opts   APNsOptions
	key    *ecdsa.PrivateKey
	p8     []byte
	keyID  string
	teamID string
	ca     *testCA

	mu       sync.Mutex
	requests []APNsRequest
	verified map[string]jwtVerdict // JWT string -> verdict (APNs too caches)
	expired  map[string]bool
}

type jwtVerdict struct {
	ok  bool
	iat time.Time
}

// NewAPNs starts a fake APNs for the test. It makes its own .p8 key
// (AuthKey) and a CA for client certificates (ClientCertificate).
func NewAPNs(tb testing.TB, opts *APNsOptions) *APNsServer {
	tb.Helper()
	s := &APNsServer{keyID: "PUSHTEST01", teamID: "TEAMTEST01", verified: map[string]jwtVerdict{}, expired: map[string]bool{}}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.MaxTokenAge == 0 {
		s.opts.MaxTokenAge = time.Hour
	}
	s.key, s.p8 = newP8(tb)
	s.ca = newTestCA(tb)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.EnableHTTP2 = true
	s.srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: s.ca.pool}
	s.srv.Config.ErrorLog = nil
	s.srv.StartTLS()
	tb.Cleanup(s.srv.Close)
	return s
}

// URL is the fake's base URL (https://127.0.0.1:PORT).
func (s *APNsServer) URL() string { return s.srv.URL }

// AuthKey is the .p8 key the fake trusts, with KeyID and TeamID.
func (s *APNsServer) AuthKey() (p8 secret.Value, keyID, teamID string) {
	return secret.New(s.p8), s.keyID, s.teamID
}

// ClientCertificate issues a client certificate for topic that the fake trusts.
func (s *APNsServer) ClientCertificate(tb testing.TB, topic string) *tls.Certificate {
	return s.ca.issue(tb, topic)
}

// CertificatePEM is the fake's server certificate, for a client in another
// process (a crash test's child) to trust.
func (s *APNsServer) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// TLSConfig trusts the fake's server certificate.
func (s *APNsServer) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

// Requests returns what the fake received so far.
func (s *APNsServer) Requests() []APNsRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]APNsRequest(nil), s.requests...)
}

// Delivered returns the requests the fake accepted (200).
func (s *APNsServer) Delivered() []APNsRequest {
	var out []APNsRequest
	for _, r := range s.Requests() {
		if r.Status == http.StatusOK {
			out = append(out, r)
		}
	}
	return out
}

// JWTs returns the distinct provider tokens seen, in order of first use.
func (s *APNsServer) JWTs() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range s.Requests() {
		if r.JWT != "" && !seen[r.JWT] {
			seen[r.JWT] = true
			out = append(out, r.JWT)
		}
	}
	return out
}

// ExpireTokens makes every JWT seen so far answer 403 ExpiredProviderToken,
// as APNs does for a token past its hour.
func (s *APNsServer) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.requests {
		if r.JWT != "" {
			s.expired[r.JWT] = true
		}
	}
}

func (s *APNsServer) serve(w http.ResponseWriter, r *http.Request) {
	req := APNsRequest{
		Token:      strings.TrimPrefix(r.URL.Path, "/3/device/"),
		Topic:      r.Header.Get("apns-topic"),
		PushType:   r.Header.Get("apns-push-type"),
		Priority:   r.Header.Get("apns-priority"),
		CollapseID: r.Header.Get("apns-collapse-id"),
		Expiration: r.Header.Get("apns-expiration"),
		ApnsID:     r.Header.Get("apns-id"),
		RemoteAddr: r.RemoteAddr,
	}
	if req.ApnsID == "" {
		req.ApnsID = newUUID()
	}
	req.Raw, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	_ = json.Unmarshal(req.Raw, &req.Payload)
	status, reason, ts, retryAfter := s.judge(r, &req)
	req.Status, req.Reason = status, reason
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()

	w.Header().Set("apns-id", req.ApnsID)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	body := map[string]any{"reason": reason}
	if !ts.IsZero() {
		body["timestamp"] = ts.UnixMilli()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *APNsServer) judge(r *http.Request, req *APNsRequest) (int, string, time.Time, string) {
	if r.Method != http.MethodPost {
		return 405, "MethodNotAllowed", time.Time{}, ""
	}
	if !strings.HasPrefix(r.URL.Path, "/3/device/") {
		return 404, "BadPath", time.Time{}, ""
	}
	if r.ProtoMajor != 2 {
		return 400, "BadPath", time.Time{}, "" // APNs speaks only HTTP/2
	}
	// Authentication: a client certificate, or a provider JWT.
	var certTopic string
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		req.Auth = "certificate"
		certTopic = strings.TrimPrefix(r.TLS.PeerCertificates[0].Subject.CommonName, "Apple Push Services: ")
	} else {
		req.Auth = "token"
		authz := r.Header.Get("authorization")
		if authz == "" {
			return 403, "MissingProviderToken", time.Time{}, ""
		}
		req.JWT = strings.TrimPrefix(authz, "bearer ")
		if reason := s.checkJWT(req.JWT); reason != "" {
			return 403, reason, time.Time{}, ""
		}
	}
	if f, ok := s.take(r.Context(), req.Token); ok {
		return f.Status, f.Reason, f.Timestamp, f.RetryAfter
	}
	if req.Token == "" {
		return 400, "MissingDeviceToken", time.Time{}, ""
	}
	if b, err := hex.DecodeString(req.Token); err != nil || len(b) < 32 {
		return 400, "BadDeviceToken", time.Time{}, ""
	}
	if req.Topic == "" {
		return 400, "MissingTopic", time.Time{}, ""
	}
	base := req.Topic
	for _, suf := range []string{".voip-ptt", ".voip", ".complication", ".push-type.liveactivity"} {
		base = strings.TrimSuffix(base, suf)
	}
	if certTopic != "" && base != certTopic {
		return 400, "TopicDisallowed", time.Time{}, ""
	}
	if len(s.opts.Topics) > 0 && !contains(s.opts.Topics, base) {
		return 400, "TopicDisallowed", time.Time{}, ""
	}
	switch req.Priority {
	case "", "1", "5", "10":
	default:
		return 400, "BadPriority", time.Time{}, ""
	}
	if len(req.CollapseID) > 64 {
		return 400, "BadCollapseId", time.Time{}, ""
	}
	limit := 4096 // APNs' limit
	if req.PushType == "voip" {
		limit = 5120 // for VoIP pushes
	}
	if len(req.Raw) == 0 {
		return 400, "PayloadEmpty", time.Time{}, ""
	}
	if len(req.Raw) > limit {
		return 413, "PayloadTooLarge", time.Time{}, ""
	}
	if req.Payload == nil {
		return 400, "BadPayload", time.Time{}, "" // not JSON
	}
	return 200, "", time.Time{}, ""
}

// checkJWT verifies an ES256 provider token against the fake's key; it
// returns the APNs reason for a bad one.
func (s *APNsServer) checkJWT(tok string) string {
	s.mu.Lock()
	v, seen := s.verified[tok]
	expired := s.expired[tok]
	s.mu.Unlock()
	if !seen {
		v = s.verifyJWT(tok)
		s.mu.Lock()
		s.verified[tok] = v
		s.mu.Unlock()
	}
	switch {
	case !v.ok:
		return "InvalidProviderToken"
	case expired || time.Since(v.iat) > s.opts.MaxTokenAge:
		return "ExpiredProviderToken"
	}
	return ""
}

func (s *APNsServer) verifyJWT(tok string) jwtVerdict {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return jwtVerdict{}
	}
	var hdr struct{ Alg, Kid string }
	var claims struct {
		Iss string
		Iat int64
	}
	if !decodeSegment(parts[0], &hdr) || !decodeSegment(parts[1], &claims) {
		return jwtVerdict{}
	}
	if hdr.Alg != "ES256" || hdr.Kid != s.keyID || claims.Iss != s.teamID {
		return jwtVerdict{}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return jwtVerdict{}
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(&s.key.PublicKey, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return jwtVerdict{}
	}
	return jwtVerdict{ok: true, iat: time.Unix(claims.Iat, 0)}
}

func decodeSegment(seg string, v any) bool {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	return err == nil && json.Unmarshal(b, v) == nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// DeviceToken returns a well-formed APNs device token (64 hex digits)
// derived from name, for tests.
func DeviceToken(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

// RetryAfterSeconds formats d as a Retry-After header value in seconds.
func RetryAfterSeconds(d time.Duration) string { return strconv.Itoa(int(d.Seconds())) }
