package twilio

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	twiliogo "github.com/twilio/twilio-go/client"

	"github.com/heraldhq/herald/internal/redact"
	"github.com/heraldhq/herald/secret"
)

// StatusEvent is one delivery status Twilio reported for a message.
type StatusEvent struct {
	// ID is MessageSID:Status, the same for a callback Twilio repeats, so
	// a tracking sink that deduplicates by event ID counts it once.
	ID         string
	MessageSID string
	// Status is Twilio's: queued, sending, sent, delivered, undelivered,
	// failed, ... Final is true for delivered, undelivered and failed.
	Status string
	Final  bool
	// ErrorCode is Twilio's asynchronous error for undelivered and failed
	// (30003 unreachable, 30005 unknown handset, 30007 filtered, ...).
	ErrorCode int
	// Gone is true when the error code says the number will never receive
	// (30005 unknown, 30006 landline, 21610 opted out).
	Gone bool
	// To is the recipient in full, for the host to act on; do not log it.
	To string
	At time.Time
}

// StatusConfig configures StatusHandler.
type StatusConfig struct {
	AuthToken secret.Value
	// PublicURL is the callback URL's scheme and host as Twilio calls it
	// ("https://hooks.example.com"); the path and query come from the
	// request. Behind a proxy it must be set, since the signature covers
	// the exact URL. Default: derived from the request.
	PublicURL string
	// OnEvent receives each verified status. An error answers 500, so
	// Twilio retries the callback.
	OnEvent func(ctx context.Context, e StatusEvent) error
	// MaxBody caps the request body. Default 64 KiB.
	MaxBody int64
	Logger  *slog.Logger
	Now     func() time.Time
}

// StatusHandler returns an http.Handler for Twilio's status callbacks: it
// verifies X-Twilio-Signature (HMAC-SHA1 of the URL and the sorted form
// parameters, with the auth token), refuses anything else with 403, and
// hands verified statuses to OnEvent.
func StatusHandler(cfg StatusConfig) (http.Handler, error) {
	if cfg.AuthToken.IsZero() {
		return nil, errors.New("twilio: StatusConfig.AuthToken is required")
	}
	if cfg.OnEvent == nil {
		return nil, errors.New("twilio: StatusConfig.OnEvent is required")
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 64 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	validator := twiliogo.NewRequestValidator(cfg.AuthToken.Reveal())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, cfg.MaxBody)
		if err := r.ParseForm(); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		params := map[string]string{}
		for k, v := range r.PostForm {
			if len(v) > 0 {
				params[k] = v[0]
			}
		}
		base := cfg.PublicURL
		if base == "" {
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			base = scheme + "://" + r.Host
		}
		if !validator.Validate(base+r.URL.RequestURI(), params, r.Header.Get("X-Twilio-Signature")) {
			cfg.Logger.Warn("twilio: status callback with a bad signature refused", "remote", r.RemoteAddr)
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		status := params["MessageStatus"]
		if status == "" {
			status = params["SmsStatus"]
		}
		sid := params["MessageSid"]
		if sid == "" || status == "" {
			http.Error(w, "missing MessageSid or MessageStatus", http.StatusBadRequest)
			return
		}
		code, _ := strconv.Atoi(params["ErrorCode"])
		ev := StatusEvent{
			ID: sid + ":" + status, MessageSID: sid, Status: status, ErrorCode: code, To: params["To"], At: cfg.Now(),
			Final: status == "delivered" || status == "undelivered" || status == "failed",
			Gone:  code == 30005 || code == 30006 || code == 21610,
		}
		if err := cfg.OnEvent(r.Context(), ev); err != nil {
			cfg.Logger.Error("twilio: status event not recorded", "sid", sid, "to", redact.Phone(ev.To), "err", err)
			http.Error(w, "not recorded, retry", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}), nil
}
