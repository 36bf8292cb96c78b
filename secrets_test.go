package herald_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/apns"
	"github.com/heraldhq/herald/push/fcm"
	"github.com/heraldhq/herald/push/pushtest"
	"github.com/heraldhq/herald/push/webpush"
	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/sms/smstest"
	"github.com/heraldhq/herald/sms/twilio"
)

var pushNote = push.Notification{Title: "Hi", Body: "there"}

// diffT records what a failed testify assertion prints: its diff dumps
// both values through go-spew, which ignores String and Format methods
// and walks unexported fields.
type diffT struct{ out strings.Builder }

func (d *diffT) Errorf(format string, args ...any) { fmt.Fprintf(&d.out, format, args...) }

// renderings renders v every way a value gets printed: the fmt verbs, on
// the value, a pointer to it and a struct holding it in an unexported
// field; slog's text and JSON handlers; encoding/json; a testify diff.
func renderings(v any) string {
	var b strings.Builder
	type holder struct {
		inner any
		Outer any
	}
	h := holder{inner: v, Outer: v}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		for _, x := range []any{v, &v, h, &h} {
			fmt.Fprintf(&b, verb+"\n", x)
		}
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("value", "v", v, "h", h)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("value", "v", v, "h", h)
	b.WriteString(logs.String())
	if j, err := json.Marshal(v); err == nil {
		b.Write(j)
	}
	if j, err := json.Marshal(h); err == nil {
		b.Write(j)
	}
	dt := &diffT{}
	assert.Equal(dt, v, struct{ Other string }{"x"})
	assert.Equal(dt, h, holder{})
	b.WriteString(dt.out.String())
	return b.String()
}

// fragments are pieces of a secret that must not appear: the text itself,
// hex, base64, and for keys their PEM body and their scalars' words as a
// dumper prints them.
func fragments(t *testing.T, secrets ...any) []string {
	t.Helper()
	var out []string
	add := func(s string) {
		if len(s) >= 12 {
			mid := len(s) / 2
			out = append(out, s[mid-6:mid+6])
		} else if s != "" {
			out = append(out, s)
		}
	}
	for _, s := range secrets {
		switch s := s.(type) {
		case string:
			add(s)
			add(fmt.Sprintf("%x", s))
			add(base64.StdEncoding.EncodeToString([]byte(s)))
			if blk, _ := pem.Decode([]byte(s)); blk != nil {
				add(base64.StdEncoding.EncodeToString(blk.Bytes))
				if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
					switch k := k.(type) {
					case *ecdsa.PrivateKey:
						add(fmt.Sprint(k.D.Bits()[0]))
						add(fmt.Sprintf("%x", k.D.Bits()[0]))
					case *rsa.PrivateKey:
						add(fmt.Sprint(k.D.Bits()[0]))
						add(fmt.Sprintf("%x", k.D.Bits()[0]))
					}
				}
			}
		case *ecdsa.PrivateKey:
			add(fmt.Sprint(s.D.Bits()[0]))
			add(fmt.Sprintf("%x", s.D.Bits()[0]))
		}
	}
	return out
}

// Every client, and every client's Config, renders without its
// credentials under every fmt verb, slog (text and JSON), encoding/json
// and a testify diff.
func TestNoClientPrintsItsCredentials(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	check := func(t *testing.T, name string, values []any, secrets ...any) {
		t.Helper()
		frags := fragments(t, secrets...)
		require.NotEmpty(t, frags)
		for i, v := range values {
			out := renderings(v)
			for _, f := range frags {
				require.NotContains(t, out, f, "%s: value %d (%T) printed part of a secret", name, i, v)
			}
		}
	}

	t.Run("apns token", func(t *testing.T) {
		t.Parallel()
		f := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
		cfg := (&apns.Config{Topic: topic}).UseFake(f)
		c, err := apns.New(cfg)
		require.NoError(t, err)
		t.Cleanup(c.CloseIdleConnections)
		m := msgPush("k", push.APNs, pushtest.DeviceToken("d"), pushNote)
		_, err = c.Send(ctx, &m.Push.Message)
		require.NoError(t, err) // a JWT is made and cached: it must not print either
		check(t, "apns", []any{c, *cfg, cfg}, cfg.AuthKey.Reveal())
	})
	t.Run("apns certificate", func(t *testing.T) {
		t.Parallel()
		f := pushtest.NewAPNs(t, &pushtest.APNsOptions{Topics: []string{topic}})
		cert := f.ClientCertificate(t, topic)
		cfg := (&apns.Config{Topic: topic, Certificate: secret.Seal(cert)}).UseFake(f)
		c, err := apns.New(cfg)
		require.NoError(t, err)
		t.Cleanup(c.CloseIdleConnections)
		check(t, "apns", []any{c, *cfg, cfg}, cert.PrivateKey)
	})
	t.Run("fcm", func(t *testing.T) {
		t.Parallel()
		f := pushtest.NewFCM(t, nil)
		sa := f.ServiceAccountJSON(t)
		cfg := (&fcm.Config{CredentialsJSON: sa}).UseFake(f)
		c, err := fcm.New(ctx, cfg)
		require.NoError(t, err)
		m := msgPush("k", push.FCM, pushtest.RegistrationToken("d"), pushNote)
		_, err = c.Send(ctx, &m.Push.Message)
		require.NoError(t, err) // an access token is fetched and cached
		var doc struct {
			PrivateKey string `json:"private_key"`
		}
		require.NoError(t, json.Unmarshal(sa.Bytes(), &doc))
		check(t, "fcm", []any{c, *cfg, cfg}, doc.PrivateKey, f.AccessToken())
	})
	t.Run("webpush", func(t *testing.T) {
		t.Parallel()
		f := pushtest.NewWebPush(t)
		pub, priv, err := webpush.GenerateVAPIDKeys()
		require.NoError(t, err)
		cfg := (&webpush.Config{VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subscriber: "ops@example.com"}).UseFake(f)
		c, err := webpush.New(cfg)
		require.NoError(t, err)
		t.Cleanup(c.CloseIdleConnections)
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(priv.Reveal(), "="))
		require.NoError(t, err)
		check(t, "webpush", []any{c, *cfg, cfg}, priv.Reveal(), string(raw), base64.RawURLEncoding.EncodeToString(raw))
	})
	t.Run("smtp", func(t *testing.T) {
		t.Parallel()
		f := emailtest.NewServer(t, nil)
		cfg := (&smtp.Config{}).UseFake(f)
		c, err := smtp.New(cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		_, err = c.Send(ctx, msgEmail("k", "a@example.com").Email)
		require.NoError(t, err) // a pooled connection holds the password now
		check(t, "smtp", []any{c, *cfg, cfg}, cfg.Password.Reveal())
	})
	t.Run("twilio", func(t *testing.T) {
		t.Parallel()
		f := smstest.NewServer(t)
		cfg := (&twilio.Config{}).UseFake(f)
		c, err := twilio.New(cfg)
		require.NoError(t, err)
		check(t, "twilio", []any{c, *cfg, cfg}, cfg.AuthToken.Reveal())
	})
}
