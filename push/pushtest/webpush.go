package pushtest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// WebPushRequest is one push message the fake received.
type WebPushRequest struct {
	Subscription string // the subscription's JSON, as the host stores it
	TTL          string
	Urgency      string
	Topic        string
	// Plaintext is the decrypted payload; Payload its JSON, decoded.
	Plaintext []byte
	Payload   map[string]any
	// Status is what the fake answered; Error why it refused, if it did.
	Status int
	Error  string
}

// WebPushServer is a fake push service (RFC 8030) over TLS on loopback: it
// checks the VAPID JWT (RFC 8292) against the subscription's application
// server key and decrypts the aes128gcm payload (RFC 8291) with the
// subscription's keys.
type WebPushServer struct {
	Faults

	srv *httptest.Server

	mu       sync.Mutex
	subs     map[string]*fakeSub // by ID
	requests []WebPushRequest
}

type fakeSub struct {
	json      string
	key       *ecdh.PrivateKey
	auth      []byte
	appServer []byte // the VAPID public key it subscribed with
	gone      bool
}

// NewWebPush starts a fake push service for the test.
func NewWebPush(tb testing.TB) *WebPushServer {
	tb.Helper()
	s := &WebPushServer{subs: map[string]*fakeSub{}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.EnableHTTP2 = true
	s.srv.StartTLS()
	tb.Cleanup(s.srv.Close)
	return s
}

// URL is the fake's base URL.
func (s *WebPushServer) URL() string { return s.srv.URL }

// TLSConfig trusts the fake's certificate.
func (s *WebPushServer) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

// NewSubscription makes a subscription, as a browser would when subscribing
// with the application server key vapidPublicKey, and returns its JSON.
func (s *WebPushServer) NewSubscription(tb testing.TB, vapidPublicKey string) string {
	tb.Helper()
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatalf("pushtest: subscription key: %v", err)
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	app, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(vapidPublicKey, "="))
	if err != nil {
		tb.Fatalf("pushtest: VAPID public key: %v", err)
	}
	id := newUUID()
	b, _ := json.Marshal(map[string]any{
		"endpoint": s.srv.URL + "/push/" + id,
		"keys": map[string]string{
			"p256dh": base64.RawURLEncoding.EncodeToString(key.PublicKey().Bytes()),
			"auth":   base64.RawURLEncoding.EncodeToString(auth),
		},
	})
	s.mu.Lock()
	s.subs[id] = &fakeSub{json: string(b), key: key, auth: auth, appServer: app}
	s.mu.Unlock()
	return string(b)
}

// Unsubscribe makes the subscription answer 410 Gone from now on.
func (s *WebPushServer) Unsubscribe(subscription string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.subs {
		if sub.json == subscription {
			sub.gone = true
		}
	}
}

// Requests returns what the fake received so far.
func (s *WebPushServer) Requests() []WebPushRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]WebPushRequest(nil), s.requests...)
}

// Delivered returns the messages the fake accepted (201).
func (s *WebPushServer) Delivered() []WebPushRequest {
	var out []WebPushRequest
	for _, r := range s.Requests() {
		if r.Status == http.StatusCreated {
			out = append(out, r)
		}
	}
	return out
}

func (s *WebPushServer) serve(w http.ResponseWriter, r *http.Request) {
	req := WebPushRequest{TTL: r.Header.Get("TTL"), Urgency: r.Header.Get("Urgency"), Topic: r.Header.Get("Topic")}
	status, why, retryAfter := s.judge(r, &req)
	req.Status, req.Error = status, why
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if status == http.StatusCreated {
		w.Header().Set("Location", "/msg/"+newUUID())
	}
	w.WriteHeader(status)
	if why != "" {
		io.WriteString(w, why)
	}
}

func (s *WebPushServer) judge(r *http.Request, req *WebPushRequest) (int, string, string) {
	id, ok := strings.CutPrefix(r.URL.Path, "/push/")
	if !ok || r.Method != http.MethodPost {
		return 404, "no such endpoint", ""
	}
	s.mu.Lock()
	sub := s.subs[id]
	s.mu.Unlock()
	if sub == nil {
		return 404, "no such subscription", ""
	}
	req.Subscription = sub.json
	if sub.gone {
		return 410, "subscription expired or unsubscribed", ""
	}
	if why := checkVAPID(r.Header.Get("Authorization"), sub.appServer, s.srv.URL); why != "" {
		if strings.HasPrefix(why, "403 ") {
			return 403, why[4:], ""
		}
		return 401, why, ""
	}
	if f, ok := s.take(r.Context(), sub.json); ok {
		return f.Status, f.Reason, f.RetryAfter
	}
	if req.TTL == "" {
		return 400, "missing TTL header", ""
	}
	if _, err := strconv.Atoi(req.TTL); err != nil {
		return 400, "bad TTL header", ""
	}
	if len(req.Topic) > 32 || strings.Trim(req.Topic, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return 400, "bad Topic header", ""
	}
	if r.Header.Get("Content-Encoding") != "aes128gcm" {
		return 400, "Content-Encoding must be aes128gcm", ""
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8192))
	if len(body) > 4096 {
		return 413, "payload too large", ""
	}
	pt, err := Decrypt(body, sub.key, sub.auth)
	if err != nil {
		return 400, "cannot decrypt: " + err.Error(), ""
	}
	req.Plaintext = pt
	_ = json.Unmarshal(pt, &req.Payload)
	return 201, "", ""
}

// checkVAPID verifies "vapid t=<jwt>, k=<key>" per RFC 8292; it returns why
// it refused ("403 ..." for a key that is not the subscription's).
func checkVAPID(h string, appServer []byte, origin string) string {
	rest, ok := strings.CutPrefix(h, "vapid ")
	if !ok {
		return "missing vapid authorization"
	}
	var tok, k string
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		if v, ok := strings.CutPrefix(part, "t="); ok {
			tok = v
		} else if v, ok := strings.CutPrefix(part, "k="); ok {
			k = v
		}
	}
	key, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k, "="))
	if err != nil || len(key) != 65 {
		return "bad k"
	}
	if !bytes.Equal(key, appServer) {
		return "403 VAPID key is not the subscription's application server key"
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "malformed JWT"
	}
	var hdr struct{ Alg string }
	var claims struct {
		Aud string
		Exp int64
		Sub string
	}
	if !decodeSegment(parts[0], &hdr) || !decodeSegment(parts[1], &claims) || hdr.Alg != "ES256" {
		return "malformed JWT"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return "bad signature"
	}
	pub, err := p256PublicKey(key)
	if err != nil {
		return "bad k"
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return "bad signature"
	}
	now := time.Now().Unix()
	switch {
	case claims.Aud != origin:
		return "aud is not the push service's origin"
	case claims.Exp <= now || claims.Exp > now+24*3600:
		return "exp not within 24 hours"
	case !strings.HasPrefix(claims.Sub, "mailto:") && !strings.HasPrefix(claims.Sub, "https:"):
		return "sub must be mailto: or https:"
	}
	return ""
}

// spkiP256 is the DER prefix of a SubjectPublicKeyInfo for an uncompressed
// P-256 point (id-ecPublicKey, prime256v1, a 66-byte BIT STRING).
var spkiP256 = []byte{0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00}

func p256PublicKey(point []byte) (*ecdsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(append(bytes.Clone(spkiP256), point...))
	if err != nil {
		return nil, err
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return pub, nil
}

// Decrypt opens an aes128gcm body (RFC 8188) encrypted for a subscription
// per RFC 8291, given the subscription's private key and auth secret.
func Decrypt(body []byte, ua *ecdh.PrivateKey, auth []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("body shorter than the aes128gcm header")
	}
	salt, rs, idlen := body[:16], binary.BigEndian.Uint32(body[16:20]), int(body[20])
	if rs < 18 || len(body) < 21+idlen {
		return nil, errors.New("bad aes128gcm header")
	}
	asPubBytes, ct := body[21:21+idlen], body[21+idlen:]
	asPub, err := ecdh.P256().NewPublicKey(asPubBytes)
	if err != nil {
		return nil, fmt.Errorf("sender key: %w", err)
	}
	shared, err := ua.ECDH(asPub)
	if err != nil {
		return nil, err
	}
	info := append(append([]byte("WebPush: info\x00"), ua.PublicKey().Bytes()...), asPubBytes...)
	ikm, err := hkdf.Key(sha256.New, shared, auth, string(info), 32)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	var out []byte
	for seq := uint64(0); len(ct) > 0; seq++ {
		n := min(int(rs), len(ct))
		rec := ct[:n]
		ct = ct[n:]
		iv := bytes.Clone(nonce)
		var sb [8]byte
		binary.BigEndian.PutUint64(sb[:], seq)
		for i := range 8 {
			iv[4+i] ^= sb[i]
		}
		pt, err := gcm.Open(nil, iv, rec, nil)
		if err != nil {
			return nil, err
		}
		i := len(pt) - 1
		for i >= 0 && pt[i] == 0 {
			i--
		}
		if i < 0 || (len(ct) == 0 && pt[i] != 2) || (len(ct) > 0 && pt[i] != 1) {
			return nil, errors.New("bad padding delimiter")
		}
		out = append(out, pt[:i]...)
	}
	return out, nil
}

// CanaryListener listens on loopback and counts the connections it
// accepts: an SSRF test points endpoints at it and expects zero.
type CanaryListener struct {
	ln    net.Listener
	mu    sync.Mutex
	count int
	done  chan struct{}
}

// NewCanary starts a canary listener for the test.
func NewCanary(tb testing.TB) *CanaryListener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("pushtest: canary: %v", err)
	}
	c := &CanaryListener{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.count++
			c.mu.Unlock()
			_ = conn.Close()
		}
	}()
	tb.Cleanup(func() { _ = ln.Close(); <-c.done })
	return c
}

// Addr is the canary's host:port.
func (c *CanaryListener) Addr() string { return c.ln.Addr().String() }

// Accepted returns how many connections reached the canary.
func (c *CanaryListener) Accepted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// CertificatePEM is the fake's server certificate, for a client in
// another process to trust (a CA file).
func (s *WebPushServer) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}
