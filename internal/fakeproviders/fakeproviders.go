// Package fakeproviders runs local fakes of all five providers — two
// APNs apps (rider and driver), FCM, Web Push, two SMTP senders (default
// and "shop") and Twilio — and writes a heraldd config that points at
// them, with every secret in a file beside it. `heraldd fakes` and the
// server's end-to-end tests use it: the first minute of a new user and
// the tests run the same wiring.
package fakeproviders

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
	"github.com/heraldhq/herald/sms/smstest"
)

// Topics of the two APNs apps.
const (
	RiderTopic  = "com.example.rider"
	DriverTopic = "com.example.driver"
)

// Fakes are the running fakes and what was written for them.
type Fakes struct {
	APNs, APNsDriver *pushtest.APNsServer
	FCM              *pushtest.FCMServer
	WebPush          *pushtest.WebPushServer
	SMTP, SMTPShop   *emailtest.Server
	Twilio           *smstest.Server
	// Config is the heraldd config's path; Dir holds it and the secrets.
	Config, Dir string
	// Keys are API keys by name: admin (every scope), sender (send,
	// read), events (events), reader (read).
	Keys map[string]string
	// VAPIDPublicKey is the Web Push app's public key (subscriptions
	// are made for it: WebPush.NewSubscription).
	VAPIDPublicKey string
}

// Options tune the config written.
type Options struct {
	// Listen is heraldd's address. Default 127.0.0.1:8080.
	Listen string
	// Store is the embedded store's file. Default Dir/herald.db.
	Store string
	// Extra is YAML appended to the config (ready:, capping:, lanes:).
	Extra string
	// EligibilityPath is the store's eligibility_path (none by default).
	EligibilityPath string
	// NoInbox leaves the Inbox out (it is on by default).
	NoInbox bool
}

// Start runs the fakes (stopped with tb's cleanup) and writes dir's config.
func Start(tb testing.TB, dir string, o *Options) (*Fakes, error) {
	if o == nil {
		o = &Options{}
	}
	f := &Fakes{
		APNs:       pushtest.NewAPNs(tb, &pushtest.APNsOptions{Topics: []string{RiderTopic}}),
		APNsDriver: pushtest.NewAPNs(tb, &pushtest.APNsOptions{Topics: []string{DriverTopic}}),
		FCM:        pushtest.NewFCM(tb, nil),
		WebPush:    pushtest.NewWebPush(tb),
		SMTP:       emailtest.NewServer(tb, nil),
		SMTPShop:   emailtest.NewServer(tb, &emailtest.Options{Username: "shop", Password: "shop-password"}),
		Twilio:     smstest.NewServer(tb),
		Dir:        dir,
		Keys:       map[string]string{},
	}
	w := &writer{dir: dir}
	ca := bytes.Join([][]byte{f.APNs.CertificatePEM(), f.APNsDriver.CertificatePEM(), f.WebPush.CertificatePEM(),
		f.SMTP.CertificatePEM(), f.SMTPShop.CertificatePEM()}, nil)
	w.file("ca.pem", ca)
	riderKey, keyID, teamID := f.APNs.AuthKey()
	driverKey, dKeyID, dTeamID := f.APNsDriver.AuthKey()
	w.file("apns-rider.p8", riderKey.Bytes())
	w.file("apns-driver.p8", driverKey.Bytes())
	w.file("fcm-service-account.json", f.FCM.ServiceAccountJSON(tb).Bytes())
	pub, priv, err := webpush.GenerateVAPIDKeys()
	if err != nil {
		return nil, err
	}
	f.VAPIDPublicKey = pub
	w.file("vapid-private.key", priv.Bytes())
	user, pw, _ := f.SMTP.Credentials()
	w.file("smtp-password", pw.Bytes())
	shopUser, shopPW, _ := f.SMTPShop.Credentials()
	w.file("smtp-shop-password", shopPW.Bytes())
	w.file("twilio-token", f.Twilio.AuthToken().Bytes())
	tokenKey := make([]byte, 32)
	_, _ = rand.Read(tokenKey)
	w.file("inbox-token-key", []byte(hex.EncodeToString(tokenKey)))

	var keys strings.Builder
	for _, k := range []struct{ name, scopes string }{{"admin", "[send, events, read, admin]"}, {"sender", "[send, read]"},
		{"events", "[events]"}, {"reader", "[read]"}} {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		key := "hk_" + hex.EncodeToString(b)
		f.Keys[k.name] = key
		sum := sha256.Sum256([]byte(key))
		fmt.Fprintf(&keys, "  - name: %s\n    sha256: %s\n    scopes: %s\n", k.name, hex.EncodeToString(sum[:]), k.scopes)
	}
	w.file("admin-key", []byte(f.Keys["admin"]))
	smtpHost, smtpPort := hostPort(f.SMTP.Addr())
	shopHost, shopPort := hostPort(f.SMTPShop.Addr())
	listen, store := o.Listen, o.Store
	if listen == "" {
		listen = "127.0.0.1:8080"
	}
	if store == "" {
		store = filepath.Join(dir, "herald.db")
	}
	p := func(name string) string { return "file:" + filepath.Join(dir, name) }
	eligibilityPath, inbox := "", "inbox:\n  token_key: "+p("inbox-token-key")+"\n"
	if o.EligibilityPath != "" {
		eligibilityPath = "  eligibility_path: " + o.EligibilityPath + "\n"
	}
	if o.NoInbox {
		inbox = ""
	}
	ca2 := filepath.Join(dir, "ca.pem")
	cfg := fmt.Sprintf(`# heraldd pointed at local fakes of every provider (heraldd fakes). Secrets are in files beside it.
listen: %s
store:
  kind: embedded
  path: %s
%sapi_keys:
%sapns:
  - app: ""
    topic: %s
    key_file: %s
    key_id: %s
    team_id: %s
    host: %s
    ca_file: %s
  - app: driver
    topic: %s
    key_file: %s
    key_id: %s
    team_id: %s
    host: %s
    ca_file: %s
fcm:
  - service_account_file: %s
    endpoint: %s
webpush:
  - vapid_public_key: %s
    vapid_private_key: %s
    subscriber: mailto:ops@example.com
    allowed_hosts: [%q]
    allow_loopback: true
    ca_file: %s
smtp:
  - host: %s
    port: %d
    username: %s
    password: %s
    ca_file: %s
  - app: shop
    host: %s
    port: %d
    username: %s
    password: %s
    ca_file: %s
twilio:
  - account_sid: %s
    auth_token: %s
    base_url: %s
%s%s`, listen, store, eligibilityPath, keys.String(),
		RiderTopic, filepath.Join(dir, "apns-rider.p8"), keyID, teamID, f.APNs.URL(), ca2,
		DriverTopic, filepath.Join(dir, "apns-driver.p8"), dKeyID, dTeamID, f.APNsDriver.URL(), ca2,
		filepath.Join(dir, "fcm-service-account.json"), f.FCM.URL()+"/v1",
		pub, p("vapid-private.key"), strings.TrimPrefix(f.WebPush.URL(), "https://"), ca2,
		smtpHost, smtpPort, user, p("smtp-password"), ca2,
		shopHost, shopPort, shopUser, p("smtp-shop-password"), ca2,
		f.Twilio.AccountSID(), p("twilio-token"), f.Twilio.URL(),
		inbox, o.Extra)
	f.Config = filepath.Join(dir, "herald.yaml")
	w.file("herald.yaml", []byte(cfg))
	return f, w.err
}

type writer struct {
	dir string
	err error
}

func (w *writer) file(name string, b []byte) {
	if w.err == nil {
		w.err = os.WriteFile(filepath.Join(w.dir, name), b, 0o600)
	}
}

func hostPort(addr string) (string, int) {
	i := strings.LastIndexByte(addr, ':')
	var port int
	fmt.Sscan(addr[i+1:], &port)
	return addr[:i], port
}
