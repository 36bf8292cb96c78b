// Package emailtest is a real SMTP server (github.com/emersion/go-smtp) on
// loopback for host apps' tests: it records every message it accepts,
// parsed, offers STARTTLS or implicit TLS and AUTH PLAIN/LOGIN, and can be
// scripted to answer 4xx or 5xx per recipient or for the next N messages.
//
//	srv := emailtest.NewServer(t, nil)
//	sender, _ := smtp.New((&smtp.Config{}).UseFake(srv))
//	myapp.SendWelcome(ctx, sender, "ada@example.com")
//	msg := srv.Messages()[0] // parsed: headers, text, HTML, attachments
package emailtest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/heraldhq/herald/secret"
)

// TLSMode is how clients must connect to the server.
type TLSMode int

// TLS modes.
const (
	StartTLS    TLSMode = iota // upgrade a plain connection (the default)
	ImplicitTLS                // TLS from the first byte
	NoTLS                      // plain text
)

// Options configures NewServer. The zero value is a STARTTLS server with
// AUTH (user "herald", password "test-password").
type Options struct {
	// TLS is how clients must connect: StartTLS (default), ImplicitTLS or NoTLS.
	TLS TLSMode
	// Username and Password are the credentials AUTH accepts. Empty
	// Username: the defaults. NoAuth: no AUTH at all.
	Username string
	Password string
	NoAuth   bool
	// MaxMessageBytes is the size limit (552 5.3.4 past it). Default 10 MiB.
	MaxMessageBytes int64
}

// Reply is a scripted SMTP answer.
type Reply struct {
	Code     int    // e.g. 550
	Enhanced [3]int // e.g. {5, 1, 1}
	Message  string
}

// Message is one message the server accepted.
type Message struct {
	From       string   // envelope sender
	Recipients []string // envelope recipients
	Header     mail.Header
	Subject    string // decoded
	Text       string
	HTML       string
	// Attachments are the parts with a filename.
	Attachments []Attachment
	Raw         []byte
}

// Attachment is a part with a filename.
type Attachment struct {
	Filename    string
	ContentType string
	Data        []byte
}

// Server is a fake SMTP server.
type Server struct {
	srv  *gosmtp.Server
	ln   net.Listener
	opts Options
	cert *x509.Certificate

	mu       sync.Mutex
	messages []Message
	byRcpt   map[string]Reply
	next     []Reply
	conns    map[string]bool
	authFail int
	// transactions counts DATA commands.
	transactions int
}

// NewServer starts a server for the test; it stops with t.Cleanup.
func NewServer(tb testing.TB, opts *Options) *Server {
	tb.Helper()
	s := &Server{byRcpt: map[string]Reply{}, conns: map[string]bool{}}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Username == "" {
		s.opts.Username, s.opts.Password = "herald", "test-password"
	}
	if s.opts.MaxMessageBytes == 0 {
		s.opts.MaxMessageBytes = 10 << 20
	}
	// Borrow httptest's certificate for 127.0.0.1.
	hs := httptest.NewUnstartedServer(nil)
	hs.StartTLS()
	tlsCfg := &tls.Config{Certificates: hs.TLS.Certificates}
	s.cert = hs.Certificate()
	hs.Close()

	s.srv = gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		s.mu.Lock()
		// STARTTLS starts a second session on the same connection: count
		// connections by their client address.
		s.conns[c.Conn().RemoteAddr().String()] = true
		s.mu.Unlock()
		return &session{s: s}, nil
	}))
	s.srv.Domain = "emailtest.local"
	s.srv.MaxMessageBytes = s.opts.MaxMessageBytes
	s.srv.MaxRecipients = 100
	s.srv.ReadTimeout, s.srv.WriteTimeout = 10*time.Second, 10*time.Second
	s.srv.AllowInsecureAuth = s.opts.TLS == NoTLS
	var err error
	switch s.opts.TLS {
	case ImplicitTLS:
		s.ln, err = tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	default:
		if s.opts.TLS == StartTLS {
			s.srv.TLSConfig = tlsCfg
		}
		s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		tb.Fatalf("emailtest: listen: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.Serve(s.ln)
	}()
	tb.Cleanup(func() {
		_ = s.srv.Close()
		_ = s.ln.Close() // Close may run before Serve registered the listener
		<-done
	})
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// TLSConfig trusts the server's certificate.
func (s *Server) TLSConfig() *tls.Config {
	host, _, _ := net.SplitHostPort(s.Addr())
	pool := x509.NewCertPool()
	pool.AddCert(s.cert)
	return &tls.Config{RootCAs: pool, ServerName: host}
}

// Security is how clients must connect: "starttls", "tls" or "none".
func (s *Server) Security() string {
	switch s.opts.TLS {
	case ImplicitTLS:
		return "tls"
	case NoTLS:
		return "none"
	}
	return "starttls"
}

// Credentials are what AUTH accepts; ok is false with NoAuth.
func (s *Server) Credentials() (username string, password secret.Value, ok bool) {
	if s.opts.NoAuth {
		return "", secret.Value{}, false
	}
	return s.opts.Username, secret.String(s.opts.Password), true
}

// FailRecipient answers RCPT TO for addr with r until Heal.
func (s *Server) FailRecipient(addr string, r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byRcpt[strings.ToLower(addr)] = r
}

// FailNext answers the end of DATA of the next n messages with r.
func (s *Server) FailNext(n int, r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.next = append(s.next, r)
	}
}

// Heal removes every scripted reply.
func (s *Server) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byRcpt, s.next = map[string]Reply{}, nil
}

// Messages returns the messages accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Transactions counts the messages clients sent to the end of DATA,
// accepted or refused: one per send attempt that got that far.
func (s *Server) Transactions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transactions
}

// Connections counts the SMTP connections clients opened (to see reuse).
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// AuthFailures counts refused AUTH attempts.
func (s *Server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFail
}

func (r Reply) err() error {
	return &gosmtp.SMTPError{Code: r.Code, EnhancedCode: gosmtp.EnhancedCode(r.Enhanced), Message: r.Message}
}

type session struct {
	s     *Server
	authd bool
	from  string
	rcpts []string
}

var _ gosmtp.AuthSession = (*session)(nil)

func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.NoAuth {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != ss.s.opts.Username || pass != ss.s.opts.Password {
			ss.s.mu.Lock()
			ss.s.authFail++
			ss.s.mu.Unlock()
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		ss.authd = true
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return newLoginServer(check), nil
	}
	return nil, gosmtp.ErrAuthUnsupported
}

func (ss *session) Mail(from string, _ *gosmtp.MailOptions) error {
	if !ss.s.opts.NoAuth && !ss.authd {
		return &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	ss.s.mu.Lock()
	r, ok := ss.s.byRcpt[strings.ToLower(to)]
	ss.s.mu.Unlock()
	if ok {
		return r.err()
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.transactions++
	if len(ss.s.next) > 0 {
		rep := ss.s.next[0]
		ss.s.next = ss.s.next[1:]
		ss.s.mu.Unlock()
		return rep.err()
	}
	ss.s.mu.Unlock()
	m, err := parse(raw)
	if err != nil {
		return &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0}, Message: "unparsable message: " + err.Error()}
	}
	m.From, m.Recipients = ss.from, append([]string(nil), ss.rcpts...)
	ss.s.mu.Lock()
	ss.s.messages = append(ss.s.messages, *m)
	ss.s.mu.Unlock()
	return nil
}

func (ss *session) Reset()        { ss.from, ss.rcpts = "", nil }
func (ss *session) Logout() error { return nil }

// parse reads a message: headers, and text, HTML and attachments from its
// MIME parts.
func parse(raw []byte) (*Message, error) {
	pm, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	m := &Message{Header: pm.Header, Raw: raw}
	dec := new(mime.WordDecoder)
	if m.Subject, err = dec.DecodeHeader(pm.Header.Get("Subject")); err != nil {
		return nil, err
	}
	if err := walk(m, pm.Header.Get("Content-Type"), pm.Header.Get("Content-Transfer-Encoding"), "", pm.Body); err != nil {
		return nil, err
	}
	return m, nil
}

func walk(m *Message, ctype, cte, disposition string, body io.Reader) error {
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		mt = "text/plain"
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := walk(m, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p.Header.Get("Content-Disposition"), p); err != nil {
				return err
			}
		}
	}
	data, err := io.ReadAll(decodeCTE(cte, body))
	if err != nil {
		return err
	}
	_, dparams, _ := mime.ParseMediaType(disposition)
	if name := dparams["filename"]; name != "" || params["name"] != "" {
		if name == "" {
			name = params["name"]
		}
		m.Attachments = append(m.Attachments, Attachment{Filename: name, ContentType: mt, Data: data})
		return nil
	}
	switch mt {
	case "text/html":
		m.HTML = string(data)
	default:
		m.Text = string(data)
	}
	return nil
}

// CertificatePEM is the server's certificate, for a client in another
// process to trust (a CA file).
func (s *Server) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cert.Raw})
}
