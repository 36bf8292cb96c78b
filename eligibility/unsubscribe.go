package eligibility

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/secret"
)

// Links makes and checks signed one-click unsubscribe links (RFC 8058):
// https://host/unsubscribe?u=<user>&t=<topic>&e=<expiry>&s=<HMAC>. The
// signature binds user, topic and expiry, so a link opts out only its
// own user of its own topic, and a guessed or edited link is refused.
type Links struct {
	// BaseURL is where the host mounts Handler (https).
	BaseURL string
	// Key signs the links (32 random bytes; keep it like a password).
	Key secret.Value
	// TTL is how long a link works. Default 180 days (mailbox providers
	// show the unsubscribe button on old mail too).
	TTL time.Duration
}

func (l *Links) ttl() time.Duration {
	if l.TTL > 0 {
		return l.TTL
	}
	return 180 * 24 * time.Hour
}

func (l *Links) sign(user, topic string, exp int64) string {
	m := hmac.New(sha256.New, l.Key.Bytes())
	fmt.Fprintf(m, "%d\x00%s\x00%s", exp, user, topic)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// URL returns the unsubscribe link of user for topic, valid from now.
func (l *Links) URL(user, topic string, now time.Time) string {
	exp := now.Add(l.ttl()).Unix()
	q := url.Values{"u": {user}, "t": {topic}, "e": {strconv.FormatInt(exp, 10)}, "s": {l.sign(user, topic, exp)}}
	sep := "?"
	if strings.Contains(l.BaseURL, "?") {
		sep = "&"
	}
	return l.BaseURL + sep + q.Encode()
}

// ErrBadLink is a link whose signature, expiry or fields do not check.
var ErrBadLink = errors.New("eligibility: unsubscribe link not valid")

// Check verifies a link's query and returns its user and topic.
func (l *Links) Check(q url.Values, now time.Time) (user, topic string, err error) {
	user, topic = q.Get("u"), q.Get("t")
	exp, perr := strconv.ParseInt(q.Get("e"), 10, 64)
	switch {
	case l.Key.IsZero():
		return "", "", fmt.Errorf("%w: no signing key configured", ErrBadLink)
	case user == "" || topic == "" || perr != nil:
		return "", "", fmt.Errorf("%w: missing or malformed fields", ErrBadLink)
	case !hmac.Equal([]byte(q.Get("s")), []byte(l.sign(user, topic, exp))):
		return "", "", fmt.Errorf("%w: bad signature", ErrBadLink)
	case now.Unix() > exp:
		return "", "", fmt.Errorf("%w: expired", ErrBadLink)
	}
	return user, topic, nil
}

// Handler is the one-click unsubscribe endpoint: a POST with the signed
// link's query and the body "List-Unsubscribe=One-Click" (RFC 8058, what
// mailbox providers send) records the opt-out and answers 200; a GET
// shows a confirmation form that posts the same (a link clicked in a
// browser, or fetched by a scanner, changes nothing by itself). Bad or
// expired links get 403, other methods 405. now is the clock (nil:
// time.Now).
func (l *Links) Handler(store Store, logger *slog.Logger, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, topic, err := l.Check(r.URL.Query(), now())
		if err != nil {
			http.Error(w, "this unsubscribe link is not valid", http.StatusForbidden)
			return
		}
		switch r.Method {
		case http.MethodGet:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			fmt.Fprintf(w, `<!doctype html><title>Unsubscribe</title><form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button>Unsubscribe from %s</button></form>`,
				htmlEscape(strings.TrimPrefix(topic, "category:")))
		case http.MethodPost:
			if !oneClick(r) {
				http.Error(w, `want the body List-Unsubscribe=One-Click (RFC 8058)`, http.StatusBadRequest)
				return
			}
			if err := store.SetPreference(r.Context(), Preference{User: user, Topic: topic, OptedOut: true, At: now()}); err != nil {
				logger.Warn("eligibility: unsubscribe not recorded", "err", err)
				w.Header().Set("Retry-After", "60")
				http.Error(w, "try again later", http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "unsubscribed\n")
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

func oneClick(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" && mt != "multipart/form-data" {
		return false
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		return false
	}
	return r.PostForm.Get("List-Unsubscribe") == "One-Click"
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;").Replace(s)
}
