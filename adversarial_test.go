package herald_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/fcm"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/sms"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/sms/twilio"
)

// hostile is one adversarial input: a message built by mod from a valid
// one of its channel, the field FieldError must name, and the class it
// must carry (besides herald.ErrInvalid).
type hostile struct {
	name  string
	base  func() herald.Message
	mod   func(m *herald.Message)
	field string
	class error // nil: herald.ErrInvalid alone (the root's own checks)
}

// injections are the characters header injection, log forging and
// terminal tricks are made of.
var injections = map[string]string{
	"CR": "\r", "LF": "\n", "CRLF": "\r\n", "NUL": "\x00", "LS": "\u2028", "PS": "\u2029", "NEL": "\u0085", "DEL": "\x7f", "ESC": "\x1b[31m",
}

// bidi are the controls that make text read other than it is.
var bidi = map[string]string{"RLO": "\u202e", "LRO": "\u202d", "RLE": "\u202b", "LRE": "\u202a", "PDF": "\u202c", "RLI": "\u2067", "LRI": "\u2066", "FSI": "\u2068", "RLM": "\u200f"}

func adversarialCases(sub string) []hostile {
	apnsMsg := func() herald.Message { return pushTo("adv-apns", "u1", "phone") }
	fcmMsg := func() herald.Message {
		return msgPush("adv-fcm", push.FCM, pushtest.RegistrationToken("pixel"), push.Notification{Title: "Hi", Body: "there"})
	}
	wpMsg := func() herald.Message {
		return msgPush("adv-webpush", push.WebPush, sub, push.Notification{Title: "Hi", Body: "there"})
	}
	mail := func() herald.Message {
		m := msgEmail("adv-email", "ada@example.com")
		m.Email.Attachments = []email.Attachment{{Filename: "receipt.pdf", ContentType: "application/pdf", Data: []byte("%PDF")}}
		return m
	}
	text := func() herald.Message { return msgSMS("adv-sms", "+14155552671") }
	var cs []hostile
	add := func(name string, base func() herald.Message, field string, class error, mod func(m *herald.Message)) {
		cs = append(cs, hostile{name: name, base: base, mod: mod, field: field, class: class})
	}
	for cname, c := range injections {
		// Email: every value that becomes a header line.
		add("email subject "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Subject = "Hi" + c + "Bcc: all@evil.com" })
		add("email from name "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.From = `"Shop` + c + `" <shop@example.com>` })
		add("email to "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.To = []string{"ada@example.com" + c + "Bcc: x@evil.com"} })
		add("email cc "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Cc = []string{"b" + c + "@example.com"} })
		add("email reply-to "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.ReplyTo = "r@example.com" + c })
		add("email header value "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Headers = map[string]string{"X-Campaign": "spring" + c + "X-Evil: 1"} })
		add("email header name "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Headers = map[string]string{"X-A" + c: "v"} })
		add("email tag "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Tags = []string{"t" + c} })
		add("email unsubscribe "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) {
			m.Email.ListUnsubscribe = []string{"https://example.com/u" + c}
		})
		add("email filename "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Attachments[0].Filename = "a" + c + ".pdf" })
		add("email content type "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Attachments[0].ContentType = "application/pdf" + c })
		add("email content-id "+cname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) {
			m.Email.Attachments[0].Inline, m.Email.Attachments[0].ContentID = true, "logo"+c+"@example.com"
		})
		add("email idempotency key "+cname, mail, "IdempotencyKey", nil, func(m *herald.Message) { m.IdempotencyKey = "k" + c })
		// Push: values that become HTTP/2 headers.
		add("apns collapse key "+cname, apnsMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Notification.CollapseKey = "sale" + c })
		add("apns topic "+cname, apnsMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) {
			m.Push.Notification.APNs = &push.APNsOverride{Topic: topic + c}
		})
		add("apns push type "+cname, apnsMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) {
			m.Push.Notification.APNs = &push.APNsOverride{PushType: "alert" + c}
		})
		add("fcm topic "+cname, fcmMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Token, m.Push.Topic = "", "news"+c })
		add("fcm condition "+cname, fcmMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Token, m.Push.Condition = "", "'news' in topics"+c })
		add("fcm collapse key "+cname, fcmMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Notification.CollapseKey = "sale" + c })
		add("fcm token "+cname, fcmMsg, "Push", push.ErrInvalidToken, func(m *herald.Message) { m.Push.Token = pushtest.RegistrationToken("x") + c })
		add("apns token "+cname, apnsMsg, "Push", push.ErrInvalidToken, func(m *herald.Message) { m.Push.Token = pushtest.DeviceToken("x")[:62] + c })
		// SMS.
		add("sms from "+cname, text, "SMS", sms.ErrInvalidMessage, func(m *herald.Message) { m.SMS.From = "Shop" + c })
		add("sms callback "+cname, text, "SMS", sms.ErrInvalidMessage, func(m *herald.Message) { m.SMS.StatusCallback = "https://hooks.example.com/s" + c })
		add("sms to "+cname, text, "SMS", sms.ErrInvalidNumber, func(m *herald.Message) { m.SMS.To = "+14155552671" + c })
		// Identity fields: they reach logs, metrics and tracking.
		add("user "+cname, apnsMsg, "User", nil, func(m *herald.Message) { m.User = "u1" + c })
		add("campaign "+cname, apnsMsg, "Campaign", nil, func(m *herald.Message) { m.Campaign = "spring" + c })
		add("device "+cname, apnsMsg, "Device", nil, func(m *herald.Message) { m.Device = "d" + c })
		add("category "+cname, apnsMsg, "Category", nil, func(m *herald.Message) { m.Category = "promotions" + c })
	}
	for bname, b := range bidi {
		add("email display name "+bname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.From = "Bank" + b + "moc.evil <shop@example.com>" })
		add("email filename "+bname, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Attachments[0].Filename = "invoice" + b + "fdp.exe" })
	}
	for _, h := range []string{"Received", "DKIM-Signature", "Resent-From", "Resent-To", "Resent-Date", "ARC-Seal", "ARC-Message-Signature",
		"Authentication-Results", "Return-Path", "X-Herald-Tags", "Content-Type", "Content-Transfer-Encoding", "Bcc", "Message-ID", "Sender", "Received-SPF", "X-Original-To"} {
		add("email reserved header "+h, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Headers = map[string]string{h: "forged"} })
	}
	for _, ct := range []string{"multipart/mixed; boundary=x", "message/rfc822", "notatype", "text/", "/plain", "text/plain; charset", "a b/c"} {
		add("email content type "+ct, mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Attachments[0].ContentType = ct })
	}
	for _, id := range []string{"<logo@example.com>", "a b@example.com", "a@b@c", "@example.com", "logo@", strings.Repeat("x", 251), `quo"te@x`} {
		add("email content-id "+id[:min(len(id), 20)], mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) {
			m.Email.Attachments[0].Inline, m.Email.Attachments[0].ContentID = true, id
		})
	}
	add("email content-id not inline", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Attachments[0].ContentID = "logo@example.com" })
	add("email 101 recipients", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) {
		for i := range 100 {
			m.Email.Bcc = append(m.Email.Bcc, fmt.Sprintf("b%d@example.com", i))
		}
	})
	add("email 2000 bcc", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) {
		for i := range 2000 {
			m.Email.Bcc = append(m.Email.Bcc, fmt.Sprintf("b%d@example.com", i))
		}
	})
	add("email unfoldable subject", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Subject = strings.Repeat("x", 1200) })
	add("email unfoldable header", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Headers = map[string]string{"X-Long": strings.Repeat("y", 999)} })
	add("email overlong tags", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) {
		for i := range 200 {
			m.Email.Tags = append(m.Email.Tags, fmt.Sprint("tag-", i))
		}
	})
	add("email overlong filename", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Attachments[0].Filename = strings.Repeat("f", 256) + ".pdf" })
	add("email path in filename", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Attachments[0].Filename = "../../etc/passwd" })
	add("email overlong address", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.To = []string{strings.Repeat("a", 250) + "@example.com"} })
	add("email no recipient", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.To = nil })
	add("email no body", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.Text = "" })
	add("email javascript unsubscribe", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.ListUnsubscribe = []string{"javascript:alert(1)"} })
	add("email one-click without https", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) {
		m.Email.ListUnsubscribe, m.Email.OneClickUnsubscribe = []string{"mailto:u@example.com"}, true
	})
	add("email bad from", mail, "Email", email.ErrInvalidMessage, func(m *herald.Message) { m.Email.From = "not an address" })
	add("email too large", mail, "Email", email.ErrTooLarge, func(m *herald.Message) {
		m.Email.Attachments[0].Data = make([]byte, email.DefaultMaxSize+1)
	})
	// SMS: costly numbers, empty-looking bodies, hostile callbacks.
	for _, n := range []string{"+19005550123", "+8816123456789", "+882345678901", "+870773123456"} {
		add("sms costly number "+n, text, "SMS", sms.ErrInvalidNumber, func(m *herald.Message) { m.SMS.To = n })
	}
	for name, body := range map[string]string{
		"zero-width spaces": "\u200b\u200b\u200b", "BOMs": "\ufeff\ufeff", "word joiners": "\u2060\u2060", "spaces": "   \t ",
		"Braille blanks": "\u2800\u2800", "Hangul fillers": "\u3164\u3164", "NUL": "hi\x00", "invalid UTF-8": "hi\xff",
		"11 GSM segments": strings.Repeat("a", 153*10+1), "over 1600 characters": strings.Repeat("b", 1601), "bidi only": "\u202e\u202d",
	} {
		add("sms body "+name, text, "SMS", sms.ErrInvalidMessage, func(m *herald.Message) { m.SMS.Body = body })
	}
	for _, u := range []string{"http://hooks.example.com/s", "https://127.0.0.1/s", "https://localhost/s", "https://169.254.169.254/latest", "https://[::1]/s",
		"https://user:pass@hooks.example.com/s", "javascript:alert(1)", "https://metadata.internal/s", "https://printer.local/s", "https://10.0.0.1/s",
		"//hooks.example.com/s", "https://hooks", "ftp://hooks.example.com/s", "https://[fe80::1%25eth0]/s", "https://" + strings.Repeat("a", 2100) + ".com/"} {
		add("sms callback "+u[:min(len(u), 40)], text, "SMS", sms.ErrInvalidMessage, func(m *herald.Message) { m.SMS.StatusCallback = u })
	}
	add("sms sender too long", text, "SMS", sms.ErrInvalidMessage, func(m *herald.Message) { m.SMS.From = "ABCDEFGHIJKL" })
	add("sms validity 11h", text, "SMS", sms.ErrInvalidMessage, func(m *herald.Message) { m.SMS.ValidityPeriod = 11 * time.Hour })
	// Push: sizes, reserved keys, hostile endpoints.
	for _, k := range []string{"from", "notification", "message_type", "collapse_key", "google.c.a", "gcm.n.e", "googleplay", "GCM"} {
		add("fcm reserved key "+k, fcmMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Notification.Data = map[string]string{k: "1"} })
	}
	add("fcm payload over 4 KB", fcmMsg, "Push", push.ErrPayloadTooLarge, func(m *herald.Message) { m.Push.Notification.Body = strings.Repeat("x", 4097) })
	add("fcm http link", fcmMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Notification.URL = "http://example.com" })
	add("fcm two targets", fcmMsg, "Push", push.ErrInvalidToken, func(m *herald.Message) { m.Push.Topic = "news" })
	add("apns payload over 4 KB", apnsMsg, "Push", push.ErrPayloadTooLarge, func(m *herald.Message) { m.Push.Notification.Body = strings.Repeat("x", 4097) })
	add("apns collapse key over 64", apnsMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Notification.CollapseKey = strings.Repeat("c", 65) })
	add("apns topic over 200", apnsMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) {
		m.Push.Notification.APNs = &push.APNsOverride{Topic: strings.Repeat("t", 201)}
	})
	add("apns priority 7", apnsMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Notification.APNs = &push.APNsOverride{Priority: 7} })
	add("apns reserved aps key", apnsMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Notification.Data = map[string]string{"aps": "x"} })
	add("apns short token", apnsMsg, "Push", push.ErrInvalidToken, func(m *herald.Message) { m.Push.Token = "abcd" })
	add("apns non-hex token", apnsMsg, "Push", push.ErrInvalidToken, func(m *herald.Message) { m.Push.Token = strings.Repeat("z", 64) })
	keys := `"keys":{"p256dh":"BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM","auth":"tBHItJI5svbpez7KI4CCXg"}`
	for _, ep := range []string{"http://fcm.googleapis.com/x", "https://evil.example.com/x", "https://127.0.0.1/x", "https://169.254.169.254/x", "https://[::1]/x",
		"https://[fe80::1%25eth0]/x", "https://fcm.googleapis.com.evil.com/x", "https://user:pw@fcm.googleapis.com/x", "https://fcm.googleapis.com:8443/x",
		"https://2130706433/x", "https://localhost/x", "https://[::ffff:127.0.0.1]/x", "file:///etc/passwd", "https://fcm.googleapis.com/" + strings.Repeat("a", 3000)} {
		add("webpush endpoint "+ep[:min(len(ep), 40)], wpMsg, "Push", push.ErrForbiddenEndpoint, func(m *herald.Message) {
			m.Push.Token = `{"endpoint":"` + ep + `",` + keys + `}`
		})
	}
	add("webpush not JSON", wpMsg, "Push", push.ErrInvalidToken, func(m *herald.Message) { m.Push.Token = "{endpoint" })
	add("webpush bad p256dh", wpMsg, "Push", push.ErrInvalidToken, func(m *herald.Message) {
		m.Push.Token = `{"endpoint":"https://fcm.googleapis.com/x","keys":{"p256dh":"AAAA","auth":"tBHItJI5svbpez7KI4CCXg"}}`
	})
	add("webpush payload over a record", wpMsg, "Push", push.ErrPayloadTooLarge, func(m *herald.Message) { m.Push.Notification.Body = strings.Repeat("x", 4000) })
	add("webpush bad urgency", wpMsg, "Push", push.ErrInvalidMessage, func(m *herald.Message) { m.Push.Notification.WebPush = &push.WebPushOverride{Urgency: "now!"} })
	// The root's own checks: times, sizes, shape.
	for name, ttl := range map[string]time.Duration{"1ns": time.Nanosecond, "999ms": 999 * time.Millisecond, "negative": -time.Second, "250 years": 250 * 365 * 24 * time.Hour, "29 days": 29 * 24 * time.Hour} {
		add("TTL "+name, apnsMsg, "TTL", nil, func(m *herald.Message) { m.TTL = ttl })
	}
	for name, at := range map[string]time.Time{"year 2300": time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), "year 1900": time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC),
		"in two years": time.Now().Add(2 * 365 * 24 * time.Hour), "past 2262": time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC)} {
		add("SendAt "+name, apnsMsg, "SendAt", nil, func(m *herald.Message) { m.SendAt = at })
	}
	add("no idempotency key", apnsMsg, "IdempotencyKey", nil, func(m *herald.Message) { m.IdempotencyKey = "" })
	add("overlong idempotency key", apnsMsg, "IdempotencyKey", nil, func(m *herald.Message) { m.IdempotencyKey = strings.Repeat("k", 201) })
	add("invalid UTF-8 key", apnsMsg, "IdempotencyKey", nil, func(m *herald.Message) { m.IdempotencyKey = "k\xff" })
	add("overlong user", apnsMsg, "User", nil, func(m *herald.Message) { m.User = strings.Repeat("u", 201) })
	add("33 labels", apnsMsg, "Labels", nil, func(m *herald.Message) { m.Labels = make([]string, 33) })
	add("unknown time zone", apnsMsg, "TimeZone", nil, func(m *herald.Message) { m.TimeZone = "Mars/Olympus" })
	add("path in time zone", apnsMsg, "TimeZone", nil, func(m *herald.Message) { m.TimeZone = "../../etc/passwd" })
	add("two channels", apnsMsg, "Push/Email/SMS/InApp", nil, func(m *herald.Message) { m.SMS = msgSMS("x", "+14155552671").SMS })
	add("no channel", apnsMsg, "Push/Email/SMS/InApp", nil, func(m *herald.Message) { m.Push = nil })
	add("unknown provider", apnsMsg, "Push.Provider", nil, func(m *herald.Message) { m.Push.Provider = "blackberry" })
	return cs
}

// The project's adversarial suite: hostile inputs across the channels,
// each refused at the door with a *FieldError naming the field and the
// class it must carry, and nothing stored.
func TestAdversarialInputsAreRefusedAtTheDoor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := retry.NewMemoryStore()
	fcmFake := pushtest.NewFCM(t, nil)
	fc, err := fcm.New(ctx, (&fcm.Config{}).UseFake(fcmFake))
	require.NoError(t, err)
	wpFake := pushtest.NewWebPush(t)
	pub, priv, err := webpush.GenerateVAPIDKeys()
	require.NoError(t, err)
	wc, err := webpush.New((&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}).UseFake(wpFake))
	require.NoError(t, err)
	t.Cleanup(wc.CloseIdleConnections)
	smtpFake := emailtest.NewServer(t, nil)
	es, err := smtp.New((&smtp.Config{}).UseFake(smtpFake))
	require.NoError(t, err)
	twilioFake := smstest.NewServer(t)
	ss, err := twilio.New((&twilio.Config{}).UseFake(twilioFake))
	require.NoError(t, err)
	d, err := herald.New(&herald.Config{
		Store: store,
		Push:  map[push.Provider]push.Sender{push.APNs: newAPNsClient(t), push.FCM: fc, push.WebPush: wc},
		Email: es, SMS: ss,
	})
	require.NoError(t, err)
	sub := wpFake.NewSubscription(t, pub)
	cases := adversarialCases(sub)
	require.GreaterOrEqual(t, len(cases), 200, "the suite's size")
	seen := map[string]bool{}
	for _, tc := range cases {
		require.False(t, seen[tc.name], "duplicate case name %q", tc.name)
		seen[tc.name] = true
		valid := tc.base()
		_, err := d.Send(ctx, valid)
		require.NoError(t, err, "%s: the base message must be valid", tc.name)
		m := tc.base()
		m.IdempotencyKey += "-hostile"
		tc.mod(&m)
		_, err = d.Send(ctx, m)
		require.ErrorIs(t, err, herald.ErrInvalid, tc.name)
		var fe *herald.FieldError
		require.True(t, errors.As(err, &fe), "%s: %v is not a *FieldError", tc.name, err)
		require.Equal(t, tc.field, fe.Field, "%s: %v", tc.name, err)
		if tc.class != nil {
			require.ErrorIs(t, err, tc.class, tc.name)
		}
	}
	jobs, err := store.List(ctx, retry.Filter{})
	require.NoError(t, err)
	require.Len(t, jobs, 5, "only the valid base messages (one per channel) were stored")
	require.Empty(t, fcmFake.Requests())
	require.Empty(t, wpFake.Requests())
	require.Empty(t, twilioFake.Messages())
	t.Logf("%d hostile inputs refused at the door", len(cases))
}
