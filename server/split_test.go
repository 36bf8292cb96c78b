package server_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/internal/fakeproviders"
	"github.com/heraldhq/herald/push/pushtest"
)

// A deployment in two heraldd processes on the embedded store: one sends
// transactional messages, the other campaigns, each with a file of its
// own, sharing one eligibility file. A token APNs said is gone to one is
// suppressed for the other; a user's opt-out recorded at one stops the
// other's message; each refuses the other's requests with 409.
func TestHeralddSplitRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	txAddr, mkAddr := freeAddr(t), freeAddr(t)
	shared := filepath.Join(dir, "eligibility.db")
	f, err := fakeproviders.Start(t, dir, &fakeproviders.Options{Listen: txAddr, Store: filepath.Join(dir, "transactional.db"),
		EligibilityPath: shared, NoInbox: true, Extra: "role: transactional\n"})
	require.NoError(t, err)
	b, err := os.ReadFile(f.Config)
	require.NoError(t, err)
	mkConfig := filepath.Join(dir, "marketing.yaml")
	require.NoError(t, os.WriteFile(mkConfig, []byte(strings.NewReplacer("listen: "+txAddr, "listen: "+mkAddr,
		filepath.Join(dir, "transactional.db"), filepath.Join(dir, "marketing.db"),
		"role: transactional", "role: marketing").Replace(string(b))), 0o600))
	txLogs, mkLogs := &syncBuffer{}, &syncBuffer{}
	tx := start(t, f.Config, txAddr, txLogs)
	mk := start(t, mkConfig, mkAddr, mkLogs)
	sender, reader := f.Keys["sender"], f.Keys["reader"]

	// The console says which instance an operator is logging into.
	for p, role := range map[*proc]string{tx: "transactional", mk: "marketing"} {
		res, err := http.Get(p.base + "/console/login")
		require.NoError(t, err)
		page, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Contains(t, string(page), `id="role">the `+role+` instance`)
	}

	// Each instance refuses the other's requests, naming where they go.
	marketingPush := pushMsg("apns", pushtest.DeviceToken("promo"), "promo", "")
	marketingPush["Transactional"] = false
	code, v := tx.do(t, "POST", "/v1/messages", sender, marketingPush, "Idempotency-Key", "split-promo")
	require.Equal(t, 409, code, "%v", v)
	require.Contains(t, v["error"], "marketing instance")
	code, v = tx.do(t, "POST", "/v1/campaigns", sender, map[string]any{"Key": "c", "Audience": "fans", "PerSecond": 10})
	require.Equal(t, 409, code, "%v", v)
	code, v = mk.do(t, "POST", "/v1/messages", sender, pushMsg("apns", pushtest.DeviceToken("x"), "code", ""), "Idempotency-Key", "split-code")
	require.Equal(t, 409, code, "%v", v)
	require.Contains(t, v["error"], "transactional instance")
	code, _ = mk.do(t, "POST", "/v1/messages", sender, marketingPush, "Idempotency-Key", "split-promo")
	require.Equal(t, 202, code, "the marketing instance sends single marketing messages")

	// A transactional send learns a token is gone: the marketing
	// instance's campaign skips it.
	gone := pushtest.DeviceToken("fan0")
	f.APNs.FailToken(gone, pushtest.Fault{Status: 410, Reason: "Unregistered", Timestamp: time.Now()})
	code, v = tx.do(t, "POST", "/v1/messages", sender, pushMsg("apns", gone, "your code", ""), "Idempotency-Key", "split-gone")
	require.Equal(t, 202, code, "%v", v)
	require.Eventually(t, func() bool {
		_, v := mk.do(t, "POST", "/v1/suppressions/check", reader, map[string]any{"channel": "push", "recipient": gone})
		return v["suppressed"] == true
	}, 10*time.Second, 20*time.Millisecond, "the marketing instance sees the transactional one's suppression:\n%s", txLogs.String())
	// A user opts out of promotions at the transactional instance.
	code, v = tx.do(t, "PUT", "/v1/users/fan1/preferences", sender, map[string]any{"topic": "category:promotions", "opted_out": true})
	require.Equal(t, 200, code, "%v", v)

	var members []map[string]any
	for i := range 10 {
		members = append(members, map[string]any{"user": fmt.Sprint("fan", i), "token": pushtest.DeviceToken(fmt.Sprint("fan", i))})
	}
	code, v = mk.do(t, "POST", "/v1/audiences/fans/members", sender, map[string]any{"upload_id": "u1", "members": members})
	require.Equal(t, 200, code, "%v", v)
	code, v = mk.do(t, "POST", "/v1/campaigns", sender, map[string]any{"Key": "launch", "Audience": "fans", "PerSecond": 200,
		"Category": "promotions",
		"Content":  map[string]any{"Push": map[string]any{"Provider": "apns", "Notification": map[string]any{"Title": "Sale"}}}})
	require.Equal(t, 202, code, "%v", v)
	require.Eventually(t, func() bool {
		_, v := mk.do(t, "GET", "/v1/campaigns/launch", reader, nil)
		c, _ := v["Counts"].(map[string]any)
		return c["sent"] == float64(8) && c["suppressed"] == float64(1) && c["opted_out"] == float64(1)
	}, 20*time.Second, 50*time.Millisecond, "8 fans sent, fan0 suppressed, fan1 opted out:\n%s", mkLogs.String())
	sale := 0
	for _, r := range f.APNs.Delivered() {
		if a, ok := r.Payload["aps"].(map[string]any); ok && strings.Contains(fmt.Sprint(a["alert"]), "Sale") {
			sale++
			require.NotEqual(t, gone, r.Token, "a suppressed token got the campaign")
		}
	}
	require.Equal(t, 8, sale)

	// And the other way: a campaign's 410 stops the next transactional
	// message to that token, recorded as suppressed.
	f.APNs.FailToken(pushtest.DeviceToken("promo"), pushtest.Fault{Status: 410, Reason: "Unregistered", Timestamp: time.Now()})
	code, _ = mk.do(t, "POST", "/v1/messages", sender, func() map[string]any {
		m := pushMsg("apns", pushtest.DeviceToken("promo"), "again", "")
		m["Transactional"] = false
		return m
	}(), "Idempotency-Key", "split-promo-2")
	require.Equal(t, 202, code)
	require.Eventually(t, func() bool {
		_, v := tx.do(t, "POST", "/v1/suppressions/check", reader, map[string]any{"channel": "push", "recipient": pushtest.DeviceToken("promo")})
		return v["suppressed"] == true
	}, 10*time.Second, 20*time.Millisecond)
	code, v = tx.do(t, "POST", "/v1/messages", sender, pushMsg("apns", pushtest.DeviceToken("promo"), "receipt", ""), "Idempotency-Key", "split-receipt")
	require.Equal(t, 202, code, "%v", v)
	id := int64(v["id"].(float64))
	require.Eventually(t, func() bool {
		_, v := tx.do(t, "GET", fmt.Sprintf("/v1/messages/%d", id), reader, nil)
		return v["state"] == "completed" && strings.Contains(fmt.Sprint(v["history"]), "suppressed")
	}, 10*time.Second, 20*time.Millisecond)
}
