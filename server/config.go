package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald/secret"
)

// Config is heraldd's configuration file (YAML). Secrets are never
// written in it: a secret field holds "env:NAME" (an environment
// variable) or "file:PATH" (a file's content, trimmed), resolved at
// start. See deploy/herald.yaml for a commented sample.
type Config struct {
	// Listen is the HTTP address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// Role is what this instance sends: all (default), or, for a
	// deployment in two instances, transactional (single transactional
	// messages only: no campaign's writes ever queue ahead of them) or
	// marketing (everything else: campaigns, audiences, single
	// non-transactional messages). Each refuses the other's requests with
	// 409. On the embedded store each instance has a file of its own and
	// both name the same store.eligibility_path.
	Role  string `yaml:"role"`
	Store Store  `yaml:"store"`
	// APIKeys are the keys callers send as "Authorization: Bearer <key>",
	// stored as their SHA-256 (heraldd keygen prints a key and its hash).
	APIKeys []APIKey `yaml:"api_keys"`

	// Providers, each a list of apps: the app named "" (or the first
	// without a name) is the default; others are chosen per message by
	// its "App" field.
	APNs    []APNsApp    `yaml:"apns"`
	FCM     []FCMApp     `yaml:"fcm"`
	WebPush []WebPushApp `yaml:"webpush"`
	SMTP    []SMTPApp    `yaml:"smtp"`
	Twilio  []TwilioApp  `yaml:"twilio"`

	Capping  CappingConfig  `yaml:"capping"`
	Lanes    LanesConfig    `yaml:"lanes"`
	Messages MessagesConfig `yaml:"messages"`
	Tracking TrackingConfig `yaml:"tracking"`
	Inbox    InboxConfig    `yaml:"inbox"`
	Ready    ReadyConfig    `yaml:"ready"`
	Log      LogConfig      `yaml:"log"`
}

// Store says where everything is kept.
type Store struct {
	// Kind is embedded (default), postgres or redis.
	Kind string `yaml:"kind"`
	// Path is the embedded store's file. Default herald.db.
	Path string `yaml:"path"`
	// URL is PostgreSQL's connection string (a secret: env: or file:).
	URL string `yaml:"url"`
	// Schema is PostgreSQL's schema. Default herald.
	Schema string `yaml:"schema"`
	// EligibilityPath, embedded store only, keeps the suppression list and
	// users' preferences in a file of their own that several instances on
	// one machine share (a transactional and a marketing instance: a token
	// gone, an address bounced or an unsubscribe seen by one stops the
	// other's next message). Default: in the store's file.
	EligibilityPath string `yaml:"eligibility_path"`
	// Addr is Redis's host:port; Password a secret. The Redis store keeps
	// the tracking journal in the embedded file at Path.
	Addr     string `yaml:"addr"`
	Password string `yaml:"password"`
}

// APIKey is one caller's key.
type APIKey struct {
	Name string `yaml:"name"`
	// SHA256 is the hex SHA-256 of the key.
	SHA256 string `yaml:"sha256"`
	// Scopes: send, events, read, admin.
	Scopes []string `yaml:"scopes"`
}

// APNsApp is one APNs app: token auth (KeyFile, KeyID, TeamID) or a
// certificate (CertificateFile, PEM with its key).
type APNsApp struct {
	App             string `yaml:"app"`
	Topic           string `yaml:"topic"`
	KeyFile         string `yaml:"key_file"`
	KeyID           string `yaml:"key_id"`
	TeamID          string `yaml:"team_id"`
	CertificateFile string `yaml:"certificate_file"`
	// Environment is production (default) or development.
	Environment string `yaml:"environment"`
	// Host overrides the endpoint (a local fake); CAFile adds trust roots.
	Host   string `yaml:"host"`
	CAFile string `yaml:"ca_file"`
}

// FCMApp is one Firebase project.
type FCMApp struct {
	App                string `yaml:"app"`
	ServiceAccountFile string `yaml:"service_account_file"`
	// ProjectID defaults to the service account's.
	ProjectID string `yaml:"project_id"`
	Endpoint  string `yaml:"endpoint"`
	CAFile    string `yaml:"ca_file"`
}

// WebPushApp is one VAPID key pair (heraldd vapid generate).
type WebPushApp struct {
	App        string `yaml:"app"`
	PublicKey  string `yaml:"vapid_public_key"`
	PrivateKey string `yaml:"vapid_private_key"` // a secret
	Subscriber string `yaml:"subscriber"`        // mailto: or https: contact
	// AllowedHosts adds push services beyond the known ones (a local fake).
	AllowedHosts  []string `yaml:"allowed_hosts"`
	AllowLoopback bool     `yaml:"allow_loopback"`
	CAFile        string   `yaml:"ca_file"`
}

// SMTPApp is one SMTP sender.
type SMTPApp struct {
	App  string `yaml:"app"`
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// TLS is starttls (default), tls (implicit) or none (loopback only).
	TLS      string `yaml:"tls"`
	Username string `yaml:"username"`
	Password string `yaml:"password"` // a secret
	CAFile   string `yaml:"ca_file"`
}

// TwilioApp is one Twilio account.
type TwilioApp struct {
	App        string `yaml:"app"`
	AccountSID string `yaml:"account_sid"`
	AuthToken  string `yaml:"auth_token"` // a secret
	BaseURL    string `yaml:"base_url"`
	CAFile     string `yaml:"ca_file"`
}

// CappingConfig holds the caps and quiet hours.
type CappingConfig struct {
	Rules      []RuleConfig `yaml:"rules"`
	QuietHours *QuietConfig `yaml:"quiet_hours"`
	// Defer makes a capped message wait for a slot (within its TTL).
	Defer bool `yaml:"defer"`
}

// RuleConfig is one cap.
type RuleConfig struct {
	Name string `yaml:"name"`
	// Kind: global, label or automation.
	Kind  string `yaml:"kind"`
	Limit int    `yaml:"limit"`
	// Window: day, week (calendar, the user's time zone) or a duration
	// (rolling: 1h, 72h).
	Window               string   `yaml:"window"`
	MinInterval          Duration `yaml:"min_interval"`
	Channels             []string `yaml:"channels"`
	Labels               []string `yaml:"labels"`
	IncludeTransactional bool     `yaml:"include_transactional"`
	PerDevice            bool     `yaml:"per_device"`
}

// QuietConfig is a nightly window ("22:00" to "08:00").
type QuietConfig struct {
	Start    string   `yaml:"start"`
	End      string   `yaml:"end"`
	Channels []string `yaml:"channels"`
}

// LanesConfig sets every route's lanes.
type LanesConfig struct {
	Transactional LaneConfig `yaml:"transactional"`
	Campaign      LaneConfig `yaml:"campaign"`
}

// LaneConfig is one kind of lane.
type LaneConfig struct {
	Concurrency int `yaml:"concurrency"`
	// Rate is messages per second per route (0: unlimited).
	Rate float64 `yaml:"rate"`
}

// MessagesConfig bounds messages.
type MessagesConfig struct {
	DefaultTTL Duration `yaml:"default_ttl"`
	// Retention is how long finished messages (and their keys) are kept.
	Retention Duration `yaml:"retention"`
}

// TrackingConfig lists the sinks.
type TrackingConfig struct {
	Sinks []SinkConfig `yaml:"sinks"`
}

// SinkConfig is one sink: slog (the server's log) or webhook.
type SinkConfig struct {
	Kind string `yaml:"kind"`
	URL  string `yaml:"url"`
	// Key signs webhook bodies (a secret).
	Key string `yaml:"key"`
}

// InboxConfig enables the Inbox and in-app client API at /v1/inbox/.
type InboxConfig struct {
	// TokenKey signs user tokens (a secret, 32+ bytes).
	TokenKey string   `yaml:"token_key"`
	TokenTTL Duration `yaml:"token_ttl"`
	Origins  []string `yaml:"origins"`
}

// ReadyConfig sets when /readyz fails.
type ReadyConfig struct {
	// MaxLag fails readiness when a lane's oldest due message has waited
	// longer (0: never).
	MaxLag Duration `yaml:"max_lag"`
	// MaxStall fails readiness when messages are due and none finished
	// for this long. Default 1m.
	MaxStall Duration `yaml:"max_stall"`
}

// LogConfig sets the log.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// Duration is a time.Duration written as "90s", "4h".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (90s, 4h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Problem is one bad field of a config.
type Problem struct {
	Field, Problem string
}

// ConfigError lists every bad field of a config.
type ConfigError struct {
	Problems []Problem
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config: %d problem(s):", len(e.Problems))
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s", p.Field, p.Problem)
	}
	return b.String()
}

// Scopes an API key may have.
var Scopes = []string{"send", "events", "read", "admin"}

// LoadConfig reads and checks a config file: unknown fields, bad values
// and unresolvable secrets are all named in one *ConfigError.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(b)
}

// ParseConfig is LoadConfig for the file's content.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			ce := &ConfigError{}
			for _, m := range te.Errors {
				ce.Problems = append(ce.Problems, Problem{"yaml", m})
			}
			return nil, ce
		}
		return nil, &ConfigError{Problems: []Problem{{"yaml", err.Error()}}}
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// checker collects problems.
type checker struct{ ps []Problem }

func (c *checker) add(field, format string, args ...any) {
	c.ps = append(c.ps, Problem{field, fmt.Sprintf(format, args...)})
}

// secret resolves a secret field; required reports a missing one.
func (c *checker) secret(field, ref string, required bool) secret.Value {
	if ref == "" {
		if required {
			c.add(field, "required (env:NAME or file:PATH)")
		}
		return secret.Value{}
	}
	v, err := ResolveSecret(ref)
	if err != nil {
		c.add(field, "%v", err)
	}
	return v
}

// ResolveSecret reads "env:NAME" or "file:PATH". A secret written in the
// file itself is refused: config files get copied, committed and pasted.
func ResolveSecret(ref string) (secret.Value, error) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		v, ok := os.LookupEnv(ref[4:])
		if !ok || v == "" {
			return secret.Value{}, fmt.Errorf("environment variable %s is not set", ref[4:])
		}
		return secret.String(v), nil
	case strings.HasPrefix(ref, "file:"):
		b, err := os.ReadFile(ref[5:])
		if err != nil {
			return secret.Value{}, fmt.Errorf("cannot read %s: %v", ref[5:], errors.Unwrap(err))
		}
		return secret.New(bytes.TrimSpace(b)), nil
	}
	return secret.Value{}, errors.New("must be env:NAME or file:PATH (secrets are not written in the config)")
}

func (c *checker) file(field, path string, required bool) {
	if path == "" {
		if required {
			c.add(field, "required")
		}
		return
	}
	if _, err := os.Stat(path); err != nil {
		c.add(field, "cannot read %s", path)
	}
}

// Check validates c and names every bad field.
func (c *Config) Check() error {
	k := &checker{}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		k.add("listen", "not host:port")
	}
	c.checkStore(k)
	c.checkRole(k)
	c.checkKeys(k)
	c.checkProviders(k)
	c.checkCapping(k)
	for name, l := range map[string]LaneConfig{"lanes.transactional": c.Lanes.Transactional, "lanes.campaign": c.Lanes.Campaign} {
		if l.Concurrency < 0 || l.Concurrency > 1024 {
			k.add(name+".concurrency", "0 to 1,024")
		}
		if l.Rate < 0 {
			k.add(name+".rate", "negative")
		}
	}
	if c.Messages.DefaultTTL < 0 || time.Duration(c.Messages.DefaultTTL) > 28*24*time.Hour {
		k.add("messages.default_ttl", "0 to 28 days")
	}
	if c.Messages.Retention < 0 {
		k.add("messages.retention", "negative")
	}
	for i, s := range c.Tracking.Sinks {
		f := fmt.Sprintf("tracking.sinks[%d]", i)
		switch s.Kind {
		case "slog":
		case "webhook":
			if !strings.HasPrefix(s.URL, "https://") && !strings.HasPrefix(s.URL, "http://127.0.0.1") {
				k.add(f+".url", "an https URL")
			}
			k.secret(f+".key", s.Key, true)
		default:
			k.add(f+".kind", "slog or webhook, not %q", s.Kind)
		}
	}
	if c.Inbox.TokenKey != "" {
		if v := k.secret("inbox.token_key", c.Inbox.TokenKey, true); !v.IsZero() && len(v.Bytes()) < 32 {
			k.add("inbox.token_key", "at least 32 bytes")
		}
	}
	for i, o := range c.Inbox.Origins {
		if !strings.HasPrefix(o, "https://") && !strings.HasPrefix(o, "http://localhost") && !strings.HasPrefix(o, "http://127.0.0.1") {
			k.add(fmt.Sprintf("inbox.origins[%d]", i), "an https origin")
		}
	}
	if c.Ready.MaxLag < 0 || c.Ready.MaxStall < 0 {
		k.add("ready", "negative duration")
	}
	if !slices.Contains([]string{"", "debug", "info", "warn", "error"}, c.Log.Level) {
		k.add("log.level", "debug, info, warn or error")
	}
	if !slices.Contains([]string{"", "text", "json"}, c.Log.Format) {
		k.add("log.format", "text or json")
	}
	if len(k.ps) > 0 {
		return &ConfigError{Problems: k.ps}
	}
	return nil
}

func (c *Config) checkStore(k *checker) {
	switch c.Store.Kind {
	case "", "embedded":
		c.Store.Kind = "embedded"
	case "postgres":
		k.secret("store.url", c.Store.URL, true)
	case "redis":
		if _, _, err := net.SplitHostPort(c.Store.Addr); err != nil {
			k.add("store.addr", "host:port required")
		}
		k.secret("store.password", c.Store.Password, false)
	default:
		k.add("store.kind", "embedded, postgres or redis, not %q", c.Store.Kind)
	}
	if c.Store.Path == "" {
		c.Store.Path = "herald.db"
	}
	switch {
	case c.Store.EligibilityPath == "":
	case c.Store.Kind != "embedded":
		k.add("store.eligibility_path", "embedded store only (on %s the instances share the store itself)", c.Store.Kind)
	case c.Store.EligibilityPath == c.Store.Path:
		k.add("store.eligibility_path", "a file of its own, not store.path")
	}
}

// Roles an instance may have.
const (
	RoleAll           = "all"
	RoleTransactional = "transactional"
	RoleMarketing     = "marketing"
)

// checkRole checks that a split deployment on the embedded store loses
// nothing: the instances share the suppression list and preferences, and
// nothing that must count or be read in one place is kept in two files.
func (c *Config) checkRole(k *checker) {
	switch c.Role {
	case "", RoleAll:
		c.Role = RoleAll
		return
	case RoleTransactional, RoleMarketing:
	default:
		k.add("role", "all, transactional or marketing, not %q", c.Role)
		return
	}
	if c.Store.Kind != "embedded" {
		return // PostgreSQL and Redis are one store the instances share
	}
	if c.Store.EligibilityPath == "" {
		k.add("store.eligibility_path", "required with role %s on the embedded store: the file the transactional and marketing instances share for suppressions and preferences", c.Role)
	}
	for i, r := range c.Capping.Rules {
		if r.IncludeTransactional {
			k.add(fmt.Sprintf("capping.rules[%d].include_transactional", i), "not with role %s on the embedded store: the instances' files would each count part of it", c.Role)
		}
	}
	if c.Inbox.TokenKey != "" {
		k.add("inbox.token_key", "not with role %s on the embedded store: each instance's file would hold part of a user's Inbox (serve the Inbox from PostgreSQL or Redis, or one instance with role all)", c.Role)
	}
}

func (c *Config) checkKeys(k *checker) {
	if len(c.APIKeys) == 0 {
		k.add("api_keys", "at least one key (heraldd keygen)")
	}
	names := map[string]bool{}
	for i, key := range c.APIKeys {
		f := fmt.Sprintf("api_keys[%d]", i)
		if key.Name == "" || names[key.Name] {
			k.add(f+".name", "required and unique")
		}
		names[key.Name] = true
		if b, err := hex.DecodeString(key.SHA256); err != nil || len(b) != sha256.Size {
			k.add(f+".sha256", "the key's SHA-256 as 64 hex digits (heraldd keygen)")
		}
		if len(key.Scopes) == 0 {
			k.add(f+".scopes", "at least one of %s", strings.Join(Scopes, ", "))
		}
		for j, s := range key.Scopes {
			if !slices.Contains(Scopes, s) {
				k.add(fmt.Sprintf("%s.scopes[%d]", f, j), "unknown scope %q (%s)", s, strings.Join(Scopes, ", "))
			}
		}
	}
}

// appName checks an app name and that it is unique per provider.
func appName(k *checker, field, name string, seen map[string]bool) {
	if seen[name] {
		k.add(field+".app", "app %q twice", name)
	}
	seen[name] = true
	if strings.ContainsAny(name, "@ /") || len(name) > 100 {
		k.add(field+".app", "at most 100 bytes, no '@', '/' or space")
	}
}

func (c *Config) checkProviders(k *checker) {
	seen := map[string]bool{}
	for i, a := range c.APNs {
		f := fmt.Sprintf("apns[%d]", i)
		appName(k, f, a.App, seen)
		if a.Topic == "" {
			k.add(f+".topic", "required (the app's bundle ID)")
		}
		switch {
		case a.CertificateFile != "":
			k.file(f+".certificate_file", a.CertificateFile, true)
		default:
			k.file(f+".key_file", a.KeyFile, true)
			if len(a.KeyID) != 10 {
				k.add(f+".key_id", "the 10-character key ID")
			}
			if len(a.TeamID) != 10 {
				k.add(f+".team_id", "the 10-character team ID")
			}
		}
		if !slices.Contains([]string{"", "production", "development"}, a.Environment) {
			k.add(f+".environment", "production or development")
		}
		k.file(f+".ca_file", a.CAFile, false)
	}
	seen = map[string]bool{}
	for i, a := range c.FCM {
		f := fmt.Sprintf("fcm[%d]", i)
		appName(k, f, a.App, seen)
		k.file(f+".service_account_file", a.ServiceAccountFile, true)
		k.file(f+".ca_file", a.CAFile, false)
	}
	seen = map[string]bool{}
	for i, a := range c.WebPush {
		f := fmt.Sprintf("webpush[%d]", i)
		appName(k, f, a.App, seen)
		if a.PublicKey == "" {
			k.add(f+".vapid_public_key", "required (heraldd vapid generate)")
		}
		k.secret(f+".vapid_private_key", a.PrivateKey, true)
		if !strings.HasPrefix(a.Subscriber, "mailto:") && !strings.HasPrefix(a.Subscriber, "https://") {
			k.add(f+".subscriber", "a mailto: or https: contact")
		}
		k.file(f+".ca_file", a.CAFile, false)
	}
	seen = map[string]bool{}
	for i, a := range c.SMTP {
		f := fmt.Sprintf("smtp[%d]", i)
		appName(k, f, a.App, seen)
		if a.Host == "" {
			k.add(f+".host", "required")
		}
		if a.Port < 0 || a.Port > 65535 {
			k.add(f+".port", "1 to 65535")
		}
		if !slices.Contains([]string{"", "starttls", "tls", "none"}, a.TLS) {
			k.add(f+".tls", "starttls, tls or none")
		}
		if a.TLS == "none" && a.Host != "127.0.0.1" && a.Host != "localhost" {
			k.add(f+".tls", "none only for a server on loopback")
		}
		k.secret(f+".password", a.Password, a.Username != "")
		k.file(f+".ca_file", a.CAFile, false)
	}
	seen = map[string]bool{}
	for i, a := range c.Twilio {
		f := fmt.Sprintf("twilio[%d]", i)
		appName(k, f, a.App, seen)
		if !strings.HasPrefix(a.AccountSID, "AC") || len(a.AccountSID) != 34 {
			k.add(f+".account_sid", "AC followed by 32 hex digits")
		}
		k.secret(f+".auth_token", a.AuthToken, true)
		k.file(f+".ca_file", a.CAFile, false)
	}
	if len(c.APNs)+len(c.FCM)+len(c.WebPush)+len(c.SMTP)+len(c.Twilio) == 0 {
		k.add("apns/fcm/webpush/smtp/twilio", "configure at least one provider")
	}
}

func (c *Config) checkCapping(k *checker) {
	names := map[string]bool{}
	for i, r := range c.Capping.Rules {
		f := fmt.Sprintf("capping.rules[%d]", i)
		if r.Name == "" || names[r.Name] {
			k.add(f+".name", "required and unique")
		}
		names[r.Name] = true
		if !slices.Contains([]string{"global", "label", "automation"}, r.Kind) {
			k.add(f+".kind", "global, label or automation")
		}
		if r.MinInterval == 0 {
			if r.Limit < 1 {
				k.add(f+".limit", "at least 1")
			}
			if _, err := window(r.Window); err != nil {
				k.add(f+".window", "%v", err)
			}
		}
	}
	if q := c.Capping.QuietHours; q != nil {
		for f, v := range map[string]string{"capping.quiet_hours.start": q.Start, "capping.quiet_hours.end": q.End} {
			if _, err := time.Parse("15:04", v); err != nil {
				k.add(f, "HH:MM")
			}
		}
	}
}
