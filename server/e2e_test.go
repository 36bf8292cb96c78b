package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/internal/fakeproviders"
	"github.com/heraldhq/herald/push/pushtest"
)

// heraldd is the binary under test, built once per test run.
var heraldd = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "heraldd-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "heraldd")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/heraldd").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a running heraldd.
type proc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	base string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, config, addr string, logs *syncBuffer) *proc {
	t.Helper()
	bin, err := heraldd()
	require.NoError(t, err)
	cmd := exec.Command(bin, "serve", "-config", config)
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, logs: logs, base: "http://" + addr}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	})
	require.Eventually(t, func() bool {
		res, err := http.Get(p.base + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil && res.StatusCode == 200
	}, 20*time.Second, 20*time.Millisecond, "heraldd did not start:\n%s", logs.String())
	return p
}

func (p *proc) do(t *testing.T, method, path, key string, body any, hdr ...string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.base+path, rd)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func scrape(t *testing.T, p *proc) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(p.base + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	require.NoError(t, err)
	return fams
}

// sum adds a family's values whose labels include want.
func sum(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	total := 0.0
	for _, m := range f.GetMetric() {
		ok := true
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

func pushMsg(provider, token, title, app string) map[string]any {
	m := map[string]any{"User": "ada", "Transactional": true,
		"Push": map[string]any{"Provider": provider, "Token": token, "Notification": map[string]any{"Title": title}}}
	if app != "" {
		m["App"] = app
	}
	return m
}

func emailMsg(to, subject, app string) map[string]any {
	m := map[string]any{"User": "ada", "Transactional": true,
		"Email": map[string]any{"From": "shop@example.com", "To": []string{to}, "Subject": subject, "Text": "hello"}}
	if app != "" {
		m["App"] = app
	}
	return m
}

// The binary, started as a process with a config pointing at local fakes
// of all five providers (two APNs apps, two SMTP senders), over real HTTP.
func TestHeralddEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	f, err := fakeproviders.Start(t, dir, &fakeproviders.Options{Listen: addr,
		Extra: "ready:\n  max_stall: 1s\nlanes:\n  transactional:\n    concurrency: 4\n"})
	require.NoError(t, err)
	logs := &syncBuffer{}
	p := start(t, f.Config, addr, logs)
	admin, sender, reader, events := f.Keys["admin"], f.Keys["sender"], f.Keys["reader"], f.Keys["events"]

	// Keys and scopes.
	code, _ := p.do(t, "POST", "/v1/messages", "", emailMsg("ada@example.com", "x", ""), "Idempotency-Key", "k0")
	require.Equal(t, 401, code)
	code, _ = p.do(t, "POST", "/v1/messages", "hk_not-a-key", emailMsg("ada@example.com", "x", ""), "Idempotency-Key", "k0")
	require.Equal(t, 401, code)
	code, _ = p.do(t, "POST", "/v1/messages", reader, emailMsg("ada@example.com", "x", ""), "Idempotency-Key", "k0")
	require.Equal(t, 403, code, "a read key cannot send")
	code, _ = p.do(t, "GET", "/v1/admin/lanes", events, nil)
	require.Equal(t, 403, code, "an events key is not admin")

	before := scrape(t, p)
	// Every provider and app.
	sub := f.WebPush.NewSubscription(t, f.VAPIDPublicKey)
	sends := map[string]map[string]any{
		"rider":   pushMsg("apns", pushtest.DeviceToken("rider"), "rider", ""),
		"driver":  pushMsg("apns", pushtest.DeviceToken("driver"), "driver", "driver"),
		"fcm":     pushMsg("fcm", pushtest.RegistrationToken("fcm"), "fcm", ""),
		"webpush": pushMsg("webpush", sub, "webpush", ""),
		"mail":    emailMsg("ada@example.com", "mail", ""),
		"shop":    emailMsg("ada@example.com", "shop", "shop"),
		"sms":     {"User": "ada", "Transactional": true, "SMS": map[string]any{"To": "+14155552671", "From": "+14155550100", "Body": "Your code is 1234"}},
	}
	ids := map[string]float64{}
	for key, m := range sends {
		code, body := p.do(t, "POST", "/v1/messages", sender, m, "Idempotency-Key", "e2e-"+key)
		require.Equal(t, 202, code, "%s: %v", key, body)
		ids[key] = body["id"].(float64)
	}
	require.Eventually(t, func() bool {
		return len(f.APNs.Delivered()) == 1 && len(f.APNsDriver.Delivered()) == 1 && len(f.FCM.Delivered()) == 1 &&
			len(f.WebPush.Delivered()) == 1 && len(f.SMTP.Messages()) == 1 && len(f.SMTPShop.Messages()) == 1 && len(f.Twilio.Accepted()) == 1
	}, 15*time.Second, 20*time.Millisecond, "every provider gets its message:\n%s", logs.String())
	require.Equal(t, fakeproviders.DriverTopic, f.APNsDriver.Delivered()[0].Topic)
	require.Equal(t, "shop", f.SMTPShop.Messages()[0].Subject)
	for key, id := range ids {
		require.Eventually(t, func() bool {
			code, v := p.do(t, "GET", fmt.Sprintf("/v1/messages/%d", int64(id)), reader, nil)
			return code == 200 && v["state"] == "completed" && strings.Contains(fmt.Sprint(v["history"]), "sent")
		}, 5*time.Second, 20*time.Millisecond, key)
	}
	code, v := p.do(t, "GET", "/v1/messages?key=e2e-sms", reader, nil)
	require.Equal(t, 200, code)
	require.Equal(t, ids["sms"], v["id"])

	// Repeats, conflicts and refusals at the door.
	code, v = p.do(t, "POST", "/v1/messages", sender, sends["mail"], "Idempotency-Key", "e2e-mail")
	require.Equal(t, 200, code)
	require.Equal(t, true, v["duplicate"])
	code, _ = p.do(t, "POST", "/v1/messages", sender, emailMsg("bob@example.com", "other", ""), "Idempotency-Key", "e2e-mail")
	require.Equal(t, 409, code)
	code, v = p.do(t, "POST", "/v1/messages", sender, pushMsg("apns", pushtest.DeviceToken("x"), "x", "nope"), "Idempotency-Key", "e2e-bad-app")
	require.Equal(t, 400, code)
	require.Equal(t, "App", v["field"])
	code, v = p.do(t, "POST", "/v1/messages", sender, pushMsg("pigeon", "t", "x", ""), "Idempotency-Key", "e2e-bad-provider")
	require.Equal(t, 400, code)
	require.Equal(t, "Push.Provider", v["field"])
	code, v = p.do(t, "POST", "/v1/messages", sender, map[string]any{"User": "ada", "Fax": map[string]any{}}, "Idempotency-Key", "e2e-fax")
	require.Equal(t, 400, code)
	require.Contains(t, v["error"], "Fax")

	// A dead letter, requeued through the admin API once the cause is gone.
	f.SMTP.FailRecipient("gone@example.com", emailtest.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Message: "no such user"})
	code, _ = p.do(t, "POST", "/v1/messages", sender, emailMsg("gone@example.com", "dead", ""), "Idempotency-Key", "e2e-dead")
	require.Equal(t, 202, code)
	var deadID float64
	require.Eventually(t, func() bool {
		_, v := p.do(t, "GET", "/v1/admin/dead", admin, nil)
		d, _ := v["dead"].([]any)
		if len(d) == 1 {
			deadID = d[0].(map[string]any)["id"].(float64)
		}
		return len(d) == 1
	}, 10*time.Second, 20*time.Millisecond)
	f.SMTP.Heal()
	// The hard bounce suppressed the address; the host's admin removes it
	// (the mailbox exists again) before requeueing. Recipients travel in
	// bodies and come back masked.
	gone := map[string]any{"channel": "email", "recipient": "gone@example.com"}
	code, v = p.do(t, "POST", "/v1/suppressions/check", reader, gone)
	require.Equal(t, 200, code, "%v", v)
	require.Equal(t, true, v["suppressed"], "%v", v)
	require.Equal(t, "provider", v["source"])
	require.Contains(t, v["reason"], "550")
	require.NotContains(t, fmt.Sprint(v), "gone@example.com")
	code, _ = p.do(t, "POST", "/v1/suppressions/remove", sender, gone)
	require.Equal(t, 403, code, "removing a suppression is an admin's")
	code, v = p.do(t, "POST", "/v1/suppressions/remove", admin, gone)
	require.Equal(t, 200, code, "%v", v)
	require.Equal(t, false, v["suppressed"])
	code, _ = p.do(t, "POST", fmt.Sprintf("/v1/admin/dead/%d/requeue", int64(deadID)), admin, nil)
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return len(f.SMTP.Messages()) == 2 }, 10*time.Second, 20*time.Millisecond)

	// A stored audience and a campaign to it, fanned out by heraldd.
	var members []map[string]any
	for i := range 20 {
		members = append(members, map[string]any{"user": fmt.Sprint("fan", i), "token": pushtest.DeviceToken(fmt.Sprint("fan", i)),
			"vars": map[string]string{"first": fmt.Sprint("Fan", i)}})
	}
	code, v = p.do(t, "POST", "/v1/audiences/fans/members", sender, map[string]any{"upload_id": "u1", "members": members})
	require.Equal(t, 200, code, "%v", v)
	code, v = p.do(t, "POST", "/v1/audiences/fans/members", sender, map[string]any{"upload_id": "u1", "members": members})
	require.Equal(t, 200, code)
	require.Equal(t, true, v["duplicate"], "an upload retried with its ID changes nothing")
	code, v = p.do(t, "POST", "/v1/campaigns", sender, map[string]any{"Key": "launch", "Audience": "fans", "PerSecond": 200,
		"Content": map[string]any{"Push": map[string]any{"Provider": "apns", "Notification": map[string]any{"Title": "Hi {{.first}}"}}}})
	require.Equal(t, 202, code, "%v", v)
	code, v = p.do(t, "GET", "/v1/campaigns?limit=0", reader, nil)
	require.Equal(t, 400, code, "%v", v)
	code, v = p.do(t, "POST", "/v1/campaigns", sender, map[string]any{"Key": "broken", "Audience": "fans", "PerSecond": 200, "Content": map[string]any{}})
	require.Equal(t, 400, code, "%v", v)
	require.Eventually(t, func() bool {
		n := 0
		for _, r := range f.APNs.Delivered() {
			if a, ok := r.Payload["aps"].(map[string]any); ok && strings.HasPrefix(fmt.Sprint(a["alert"]), "map[title:Hi Fan") {
				n++
			}
		}
		_, v := p.do(t, "GET", "/v1/campaigns/launch", reader, nil)
		return n == 20 && v["FanoutDone"] == true && v["Enqueued"] == float64(20)
	}, 20*time.Second, 50*time.Millisecond, "the campaign reaches its 20 fans")
	code, v = p.do(t, "GET", "/v1/campaigns", reader, nil)
	require.Equal(t, 200, code, "%v", v)
	listed, _ := v["campaigns"].([]any)
	require.Len(t, listed, 1, "%v", v)
	require.Equal(t, "done", listed[0].(map[string]any)["State"])

	// The metrics moved.
	require.Eventually(t, func() bool {
		after := scrape(t, p)
		return sum(after, "herald_events_total", map[string]string{"type": "sent"})-sum(before, "herald_events_total", map[string]string{"type": "sent"}) >= 8 &&
			sum(after, "herald_http_request_duration_seconds", map[string]string{"route": "POST /v1/messages", "code": "202"}) >= 8 &&
			sum(after, "herald_lane_jobs", map[string]string{"lane": "transactional.apns@driver", "state": "completed"}) == 1 &&
			sum(after, "herald_store_writes_total", nil)-sum(before, "herald_store_writes_total", nil) >= 8 &&
			sum(after, "herald_store_commits_total", nil) > sum(before, "herald_store_commits_total", nil) &&
			sum(after, "herald_store_writer_busy_seconds_total", nil) > sum(before, "herald_store_writer_busy_seconds_total", nil)
	}, 10*time.Second, 50*time.Millisecond)
	after := scrape(t, p)
	require.LessOrEqual(t, sum(after, "herald_store_commits_total", nil), sum(after, "herald_store_writes_total", nil),
		"a commit carries at least one write")
	require.NotNil(t, after["herald_circuit_open"])
	require.NotNil(t, after["herald_lane_oldest_ready_seconds"])

	// The store's load since start, as the console shows it: the writer
	// did work, its share is a fraction, commits carried the writes.
	code, v = p.do(t, "GET", "/v1/admin/store", sender, nil)
	require.Equal(t, 403, code, "the store's load is for admins: %v", v)
	code, v = p.do(t, "GET", "/v1/admin/store", admin, nil)
	require.Equal(t, 200, code, "%v", v)
	load, _ := v["load"].(map[string]any)
	require.Equal(t, "store", load["holds"], "the e2e config runs on the embedded store")
	busy, _ := load["writer_busy"].(float64)
	require.Greater(t, busy, 0.0, "%v", v)
	require.Less(t, busy, 1.0, "%v", v)
	require.Greater(t, load["commits_per_second"], 0.0, "%v", v)
	require.GreaterOrEqual(t, load["writes_per_commit"], 1.0, "%v", v)
	require.Greater(t, load["window_seconds"], 0.0, "%v", v)
	require.Equal(t, false, v["saturated"], "%v", v)

	// /readyz fails while the workers are stalled (APNs answers after 3 s;
	// 4 workers; 12 due) and passes once they move again.
	f.APNs.SetLatency(3 * time.Second)
	for i := range 12 {
		code, _ := p.do(t, "POST", "/v1/messages", sender, pushMsg("apns", pushtest.DeviceToken(fmt.Sprint("slow", i)), "slow", ""), "Idempotency-Key", fmt.Sprint("e2e-slow-", i))
		require.Equal(t, 202, code)
	}
	require.Eventually(t, func() bool { c, _ := p.do(t, "GET", "/readyz", "", nil); return c == 503 }, 10*time.Second, 50*time.Millisecond, "readyz fails while stalled")
	f.APNs.SetLatency(0)
	require.Eventually(t, func() bool { c, _ := p.do(t, "GET", "/readyz", "", nil); return c == 200 }, 20*time.Second, 50*time.Millisecond, "readyz passes again")

	// A campaign paced at 2 a second (its 20 fans take 10 s) is running
	// when the process is killed: the restarted process resumes it by
	// itself from its checkpoint.
	code, v = p.do(t, "POST", "/v1/campaigns", sender, map[string]any{"Key": "slow-burn", "Audience": "fans", "PerSecond": 2,
		"Content": map[string]any{"Push": map[string]any{"Provider": "apns", "Notification": map[string]any{"Title": "Later {{.first}}"}}}})
	require.Equal(t, 202, code, "%v", v)

	// SIGKILL while accepting, restart: every accepted message is sent.
	f.APNs.Down(pushtest.Fault{Status: 503, Reason: "ServiceUnavailable"})
	var mu sync.Mutex
	var accepted []string
	var wg sync.WaitGroup
	ctx, stop := context.WithCancel(context.Background())
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("kill-%d-%d", w, i)
				b, _ := json.Marshal(pushMsg("apns", pushtest.DeviceToken(key), key, ""))
				req, _ := http.NewRequest("POST", p.base+"/v1/messages", bytes.NewReader(b))
				req.Header.Set("Authorization", "Bearer "+sender)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", key)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					return // killed
				}
				res.Body.Close()
				if res.StatusCode == 202 {
					mu.Lock()
					accepted = append(accepted, key)
					mu.Unlock()
				}
			}
		}()
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(accepted) >= 300 }, 30*time.Second, 5*time.Millisecond)
	_, v = p.do(t, "GET", "/v1/campaigns/slow-burn", reader, nil)
	require.Equal(t, "running", v["State"], "the slow campaign is still running at the kill: %v", v)
	require.Less(t, v["Enqueued"], float64(20), "%v", v)
	require.NoError(t, p.cmd.Process.Kill())
	_ = p.cmd.Wait()
	stop()
	wg.Wait()
	f.APNs.Up()
	p = start(t, f.Config, addr, logs)
	delivered := func() map[string]bool {
		got := map[string]bool{}
		for _, r := range f.APNs.Delivered() {
			if a, ok := r.Payload["aps"].(map[string]any); ok {
				if al, ok := a["alert"].(map[string]any); ok {
					got[fmt.Sprint(al["title"])] = true
				}
			}
		}
		return got
	}
	require.Eventually(t, func() bool {
		got := delivered()
		for _, k := range accepted {
			if !got[k] {
				return false
			}
		}
		return true
	}, 60*time.Second, 100*time.Millisecond, "every accepted message is sent after the restart")
	t.Logf("SIGKILL with %d accepted: all delivered after the restart", len(accepted))
	require.Eventually(t, func() bool {
		_, v := p.do(t, "GET", "/v1/campaigns/slow-burn", reader, nil)
		return v["State"] == "done" && v["Enqueued"] == float64(20)
	}, 30*time.Second, 100*time.Millisecond, "the campaign running at the kill resumed by itself and finished")

	// Secrets never appear in the logs or the metrics.
	res, err := http.Get(p.base + "/metrics")
	require.NoError(t, err)
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	pw, _ := os.ReadFile(filepath.Join(dir, "smtp-password"))
	tw, _ := os.ReadFile(filepath.Join(dir, "twilio-token"))
	for name, s := range map[string]string{"admin key": admin, "sender key": sender, "SMTP password": string(pw),
		"Twilio token": string(tw), "device token": pushtest.DeviceToken("rider"), "email": "ada@example.com", "phone": "+14155552671"} {
		require.NotContains(t, logs.String(), s, name+" in the logs")
		require.NotContains(t, string(metrics), s, name+" in the metrics")
	}
}
