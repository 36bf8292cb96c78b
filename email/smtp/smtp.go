// Package smtp sends email over SMTP with github.com/wneessen/go-mail:
// STARTTLS (required by default) or implicit TLS, authentication, a small
// pool of connections reused across messages, timeouts, and every reply
// code classified into the error classes of package email.
package smtp

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	netmail "net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/internal/redact"
	"github.com/heraldhq/herald/internal/tlsguard"
	"github.com/heraldhq/herald/secret"
)

// TLSMode is how the connection is secured.
type TLSMode int

// TLS modes.
const (
	// StartTLS upgrades a plain connection and refuses a server that cannot
	// (the default).
	StartTLS TLSMode = iota
	// ImplicitTLS speaks TLS from the first byte (port 465).
	ImplicitTLS
	// NoTLS sends in the clear: for a relay on loopback or a test server
	// only. Credentials are then refused unless the host is loopback.
	NoTLS
)

// Config configures a Sender.
type Config struct {
	Host string
	// Port defaults to 587 (465 with ImplicitTLS).
	Port      int
	TLS       TLSMode
	TLSConfig *tls.Config
	// Username and Password enable SMTP AUTH (PLAIN, or LOGIN with
	// AuthLogin).
	Username  string
	Password  secret.Value
	AuthLogin bool
	// HELO is the name the client gives. Default "localhost".
	HELO string
	// Timeout bounds each connection's dial and commands. Default 30s.
	Timeout time.Duration
	// PoolSize is how many connections to keep open and reuse. Default 2.
	PoolSize int
	// MaxPerConnection closes a connection after that many messages.
	// Default 100.
	MaxPerConnection int
	// IdleTimeout closes a connection idle for that long. Default 30s.
	IdleTimeout time.Duration
	// MaxSize caps a message (see email.Options). Default email.DefaultMaxSize.
	MaxSize int
	// MaxRecipients caps To, Cc and Bcc together (see email.Options).
	// Default email.DefaultMaxRecipients: set it to what the server takes.
	MaxRecipients int
	// OnGone is called when the server says the (single) recipient does not exist.
	OnGone email.GoneFunc
	// Logger receives operational messages; addresses are masked. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Fake is what a fake SMTP server hands its clients: emailtest.Server is
// one. The client package defines it, so the fake imports no client.
type Fake interface {
	Addr() string // host:port
	TLSConfig() *tls.Config
	// Security is "starttls", "tls" (implicit) or "none".
	Security() string
	// Credentials are what AUTH accepts; ok is false without AUTH.
	Credentials() (username string, password secret.Value, ok bool)
}

// UseFake points cfg at f: host, port, TLS mode and trust, and f's
// credentials unless cfg has a username. It returns cfg.
func (cfg *Config) UseFake(f Fake) *Config {
	host, port, _ := net.SplitHostPort(f.Addr())
	cfg.Host = host
	cfg.Port, _ = strconv.Atoi(port)
	switch f.Security() {
	case "tls":
		cfg.TLS = ImplicitTLS
	case "none":
		cfg.TLS = NoTLS
	default:
		cfg.TLS = StartTLS
	}
	cfg.TLSConfig = f.TLSConfig()
	if user, pass, ok := f.Credentials(); ok && cfg.Username == "" {
		cfg.Username, cfg.Password = user, pass
	}
	return cfg
}

// Sender sends email over SMTP. It is safe for concurrent use. Its state
// (the password, the pooled connections that hold it) is sealed: no
// rendering of a *Sender prints a credential.
type Sender struct {
	st secret.Opaque[*sender]
}

type sender struct {
	cfg   Config
	slots chan struct{}
	mu    sync.Mutex
	idle  []*conn
	dials int // connections opened, for tests and metrics
}

type conn struct {
	c        *mail.Client
	sent     int
	lastUsed time.Time
}

var _ email.Sender = (*Sender)(nil)

// New returns a sender. It does not connect until the first Send.
func New(cfg *Config) (*Sender, error) {
	if cfg == nil || cfg.Host == "" {
		return nil, errors.New("smtp: Config.Host is required")
	}
	s := &sender{cfg: *cfg}
	c := &s.cfg
	if c.Port == 0 {
		c.Port = 587
		if c.TLS == ImplicitTLS {
			c.Port = 465
		}
	}
	c.HELO = cmp.Or(c.HELO, "localhost")
	c.Timeout = cmp.Or(c.Timeout, 30*time.Second)
	c.PoolSize = cmp.Or(c.PoolSize, 2)
	c.MaxPerConnection = cmp.Or(c.MaxPerConnection, 100)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, 30*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PoolSize < 0 || c.Timeout < 0 || c.MaxPerConnection < 0 {
		return nil, errors.New("smtp: Config: PoolSize, Timeout and MaxPerConnection must not be negative")
	}
	if c.TLS == NoTLS && c.Username != "" && !isLoopback(c.Host) {
		return nil, errors.New("smtp: Config: refusing to send credentials without TLS to a host that is not loopback")
	}
	if c.MaxSize < 0 || c.MaxRecipients < 0 {
		return nil, errors.New("smtp: Config: MaxSize and MaxRecipients must not be negative")
	}
	if strings.ContainsAny(c.HELO, " \t\r\n") || strings.ContainsAny(c.Host, " \t\r\n/") {
		return nil, errors.New("smtp: Config: Host and HELO must be host names")
	}
	s.slots = make(chan struct{}, c.PoolSize)
	return &Sender{st: secret.Seal(s)}, nil
}

// String renders the sender without its credentials, as do GoString,
// Format, LogValue and MarshalJSON.
func (s *Sender) String() string { return "smtp.Sender{[REDACTED]}" }

// GoString implements fmt.GoStringer.
func (s *Sender) GoString() string { return s.String() }

// Format implements fmt.Formatter for every verb.
func (s *Sender) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// LogValue implements slog.LogValuer.
func (s *Sender) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON encodes the sender as its redacted name.
func (s *Sender) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Validate checks m as Send would before connecting (email.Validate with
// the sender's MaxSize and MaxRecipients), so a host refuses at the door
// what the server would refuse.
func (s *Sender) Validate(m *email.Message) error {
	_, _, err := email.Validate(m, s.st.Get().opts())
	return err
}

// Send implements email.Sender: it validates m, then sends it over a
// pooled connection. The Message-ID is derived from m.IdempotencyKey when
// set.
func (s *Sender) Send(ctx context.Context, m *email.Message) (email.Receipt, error) {
	return s.st.Get().send(ctx, m)
}

// Dials returns how many connections the sender has opened.
func (s *Sender) Dials() int { return s.st.Get().dialCount() }

// Close closes the idle connections.
func (s *Sender) Close() error { return s.st.Get().close() }

func (s *sender) opts() *email.Options {
	return &email.Options{MaxSize: s.cfg.MaxSize, MaxRecipients: s.cfg.MaxRecipients}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// boundedDial dials with the connection's whole handshake — the greeting,
// EHLO, STARTTLS, AUTH — bounded by the dial's deadline (Timeout, or the
// message's deadline if sooner): go-mail bounds the TCP connect and each
// later Send, but reads the greeting with no deadline, so a server that
// accepts and never speaks held a worker forever (found by the chaos
// matrix). Send sets its own deadline on the pooled connection.
func boundedDial(implicitTLS bool, tlsCfg *tls.Config) mail.DialContextFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		if !implicitTLS {
			return conn, nil
		}
		tc := tls.Client(conn, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	}
}

func (s *sender) newClient() (*mail.Client, error) {
	c := &s.cfg
	opts := []mail.Option{
		mail.WithPort(c.Port),
		mail.WithTimeout(c.Timeout),
		mail.WithHELO(c.HELO),
	}
	switch c.TLS {
	case StartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	case ImplicitTLS:
		opts = append(opts, mail.WithSSL())
	case NoTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	tlsCfg := &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
	if c.TLSConfig != nil {
		tlsCfg = c.TLSConfig.Clone()
		if tlsCfg.ServerName == "" {
			tlsCfg.ServerName = c.Host
		}
	}
	opts = append(opts, mail.WithTLSConfig(tlsCfg), mail.WithDialContextFunc(boundedDial(c.TLS == ImplicitTLS, tlsCfg)))
	if c.Username != "" {
		auth := mail.SMTPAuthPlain
		if c.AuthLogin {
			auth = mail.SMTPAuthLogin
		}
		opts = append(opts, mail.WithSMTPAuth(auth), mail.WithUsername(c.Username), mail.WithPassword(c.Password.Reveal()))
	}
	return mail.NewClient(c.Host, opts...)
}

// get returns an idle connection or dials a new one; the caller holds a slot.
func (s *sender) get(ctx context.Context) (*conn, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	for len(s.idle) > 0 {
		cn := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if now.Sub(cn.lastUsed) < s.cfg.IdleTimeout {
			s.mu.Unlock()
			return cn, nil
		}
		_ = cn.c.Close()
	}
	s.dials++
	s.mu.Unlock()
	mc, err := s.newClient()
	if err != nil {
		return nil, &email.Error{Kind: email.ErrInvalidMessage, Reason: "client configuration", Err: err}
	}
	if err := mc.DialWithContext(ctx); err != nil {
		return nil, dialError(err)
	}
	return &conn{c: mc, lastUsed: now}, nil
}

func (s *sender) put(cn *conn, healthy bool) {
	if !healthy || cn.sent >= s.cfg.MaxPerConnection {
		_ = cn.c.Close()
		return
	}
	cn.lastUsed = s.cfg.Now()
	s.mu.Lock()
	s.idle = append(s.idle, cn)
	s.mu.Unlock()
}

func (s *sender) dialCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials
}

func (s *sender) close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	var errs []error
	for _, cn := range idle {
		errs = append(errs, cn.c.Close())
	}
	return errors.Join(errs...)
}

func (s *sender) send(ctx context.Context, m *email.Message) (email.Receipt, error) {
	from, rcpts, err := email.Validate(m, s.opts())
	if err != nil {
		return email.Receipt{}, err
	}
	msg, id, err := s.build(m, from)
	if err != nil {
		return email.Receipt{}, &email.Error{Kind: email.ErrInvalidMessage, Reason: "building the message failed", Err: err}
	}
	masked := make([]string, len(rcpts))
	for i, r := range rcpts {
		masked[i] = redact.Email(r.Address)
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return email.Receipt{}, &email.Error{Kind: email.ErrUnavailable, Recipients: masked, Err: ctx.Err()}
	}
	defer func() { <-s.slots }()

	for attempt := 0; ; attempt++ {
		cn, err := s.get(ctx)
		if err != nil {
			err.(*email.Error).Recipients = masked
			return email.Receipt{}, err
		}
		err = cn.c.Send(msg)
		cn.sent++
		if err == nil {
			s.put(cn, true)
			return email.Receipt{MessageID: id, At: s.cfg.Now()}, nil
		}
		var se *mail.SendError
		if errors.As(err, &se) && se.Reason == mail.ErrConnCheck && attempt == 0 {
			// The pooled connection died while idle; nothing was sent on it.
			s.put(cn, false)
			continue
		}
		e := sendError(err)
		e.Recipients = masked
		// After a refused command the connection is still usable: RSET it.
		s.put(cn, e.Code != 0 && cn.c.Reset() == nil)
		if errors.Is(e, email.ErrRecipientGone) && s.cfg.OnGone != nil && len(rcpts) == 1 {
			s.cfg.OnGone(ctx, email.Gone{Address: rcpts[0].Address, Code: e.Code, Reason: e.Reason})
		}
		s.cfg.Logger.Debug("smtp: refused", "code", e.Code, "enhanced", e.EnhancedCode, "to", strings.Join(masked, ","))
		return email.Receipt{}, e
	}
}

// sendError classifies a go-mail send error without its text, which
// quotes the recipients.
func sendError(err error) *email.Error {
	var se *mail.SendError
	if errors.As(err, &se) {
		code, enh := se.ErrorCode(), se.EnhancedStatusCode()
		if code == 0 {
			return &email.Error{Kind: email.ErrUnavailable, Reason: se.Reason.String()}
		}
		e := &email.Error{Kind: email.Classify(code, enh), Code: code, EnhancedCode: enh, Reason: se.Reason.String()}
		// A refused RCPT TO is about the recipients, unless the server is
		// closing the session (421) or throttling us (4.7.x).
		e.Recipient = se.Reason == mail.ErrSMTPRcptTo && code != 421 && !strings.HasPrefix(enh, "4.7.")
		return e
	}
	return &email.Error{Kind: email.ErrUnavailable, Err: err}
}

// dialError classifies a failure to connect, greet, secure or
// authenticate: AUTH and greeting replies are textproto errors.
func dialError(err error) *email.Error {
	var tpe *textproto.Error
	if errors.As(err, &tpe) {
		return &email.Error{Kind: email.Classify(tpe.Code, ""), Code: tpe.Code, Reason: redact.Emails(firstLine(tpe.Msg))}
	}
	if tlsguard.Untrusted(err) {
		return &email.Error{Kind: email.ErrAuth, Reason: "server certificate not trusted", Err: err}
	}
	if strings.Contains(err.Error(), "STARTTLS") {
		return &email.Error{Kind: email.ErrAuth, Reason: "server does not offer STARTTLS and TLS is required", Err: err}
	}
	return &email.Error{Kind: email.ErrUnavailable, Err: err}
}

// messageIDDomain is the domain of the sender's parsed address, when it
// is a plain host name (letters, digits, dots and hyphens); else
// herald.local. The raw From text is never used: a display name may hold
// an "@" of its own.
func messageIDDomain(from *netmail.Address) string {
	if from == nil {
		return "herald.local"
	}
	at := strings.LastIndexByte(from.Address, '@')
	if at < 0 {
		return "herald.local"
	}
	d := from.Address[at+1:]
	if d == "" || len(d) > 253 {
		return "herald.local"
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return "herald.local"
		}
	}
	return d
}

func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

func (s *sender) build(m *email.Message, from *netmail.Address) (*mail.Msg, string, error) {
	msg := mail.NewMsg()
	if err := msg.From(m.From); err != nil {
		return nil, "", err
	}
	for _, set := range []struct {
		fn    func(...string) error
		addrs []string
	}{{msg.To, m.To}, {msg.Cc, m.Cc}, {msg.Bcc, m.Bcc}} {
		if len(set.addrs) > 0 {
			if err := set.fn(set.addrs...); err != nil {
				return nil, "", err
			}
		}
	}
	if m.ReplyTo != "" {
		if err := msg.ReplyTo(m.ReplyTo); err != nil {
			return nil, "", err
		}
	}
	msg.Subject(m.Subject)
	id := ""
	if m.IdempotencyKey != "" {
		sum := sha256.Sum256([]byte(m.IdempotencyKey))
		domain := messageIDDomain(from)
		id = hex.EncodeToString(sum[:16]) + "@" + domain
		msg.SetMessageIDWithValue(id)
	} else {
		msg.SetMessageID()
		id = strings.Trim(msg.GetMessageID(), "<>")
	}
	msg.SetDate()
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	case m.HTML != "":
		msg.SetBodyString(mail.TypeTextHTML, m.HTML)
	default:
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
	}
	for k, v := range m.Headers {
		msg.SetGenHeader(mail.Header(k), v)
	}
	if len(m.Tags) > 0 {
		msg.SetGenHeader("X-Herald-Tags", strings.Join(m.Tags, ","))
	}
	if len(m.ListUnsubscribe) > 0 {
		parts := make([]string, len(m.ListUnsubscribe))
		for i, u := range m.ListUnsubscribe {
			parts[i] = "<" + u + ">"
		}
		msg.SetGenHeader("List-Unsubscribe", strings.Join(parts, ", "))
		if m.OneClickUnsubscribe {
			msg.SetGenHeader("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
		}
	}
	for _, a := range m.Attachments {
		ct := cmp.Or(a.ContentType, "application/octet-stream")
		opts := []mail.FileOption{mail.WithFileContentType(mail.ContentType(ct))}
		if a.Inline {
			if a.ContentID != "" {
				opts = append(opts, mail.WithFileContentID(a.ContentID))
			}
			if err := msg.EmbedReader(a.Filename, strings.NewReader(string(a.Data)), opts...); err != nil {
				return nil, "", err
			}
			continue
		}
		if err := msg.AttachReader(a.Filename, strings.NewReader(string(a.Data)), opts...); err != nil {
			return nil, "", fmt.Errorf("attachment: %w", err)
		}
	}
	return msg, id, nil
}
