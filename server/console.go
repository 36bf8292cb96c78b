package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/retry"
)

//go:embed console
var consoleFS embed.FS

// console is the operator console: server-rendered pages with no script
// (a Content-Security-Policy with no script source), behind a login with
// an admin-scope API key; sessions are random, revocable at logout and
// end after 8 hours; every form carries the session's CSRF token and
// must come from the console's own origin.
type console struct {
	s        *Server
	pages    *template.Template
	mu       sync.Mutex
	sessions map[string]session // by SHA-256 of the cookie
}

type session struct {
	csrf    string
	expires time.Time
}

const sessionCookie = "herald_console"

func newConsole(s *Server) *console {
	funcs := template.FuncMap{
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return time.Since(t).Round(time.Second).String() + " ago"
		},
		"dur": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
		"pct": func(v float64) string { return strconv.FormatFloat(100*v, 'f', 0, 64) + " %" },
		"num": func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	}
	return &console{s: s, sessions: map[string]session{},
		pages: template.Must(template.New("").Funcs(funcs).ParseFS(consoleFS, "console/*.html"))}
}

// routes are the console's pages and forms (the OpenAPI document lists
// them too, as HTML).
func (c *console) routes() []route {
	return []route{
		{"GET", "/console/style.css", "", c.css},
		{"GET", "/console/login", "", c.loginPage},
		{"POST", "/console/login", "", c.login},
		{"POST", "/console/logout", "", c.with(c.logout)},
		{"GET", "/console/", "", c.with(c.lanes)},
		{"POST", "/console/lanes/{lane}/{action}", "", c.with(c.laneAction)},
		{"GET", "/console/dead", "", c.with(c.dead)},
		{"POST", "/console/dead/{id}/requeue", "", c.with(c.requeue)},
		{"POST", "/console/dead/{action}", "", c.with(c.deadAll)},
		{"GET", "/console/messages", "", c.with(c.message)},
		{"GET", "/console/campaigns", "", c.with(c.campaign)},
		{"POST", "/console/campaigns/{key}/{action}", "", c.with(c.campaignAction)},
	}
}

func (c *console) mount(mux *http.ServeMux) {
	for _, r := range c.routes() {
		p := r.path
		if strings.HasSuffix(p, "/") {
			p += "{$}"
		}
		mux.HandleFunc(r.method+" "+p, r.h)
	}
}

func headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (c *console) css(w http.ResponseWriter, _ *http.Request) {
	b, _ := consoleFS.ReadFile("console/style.css")
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=300")
	_, _ = w.Write(b)
}

func (c *console) render(w http.ResponseWriter, name string, data map[string]any) {
	headers(w)
	if c.s.cfg.Role != RoleAll {
		data["Role"] = c.s.cfg.Role // which of a split deployment's instances this is
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := c.pages.ExecuteTemplate(w, name, data); err != nil {
		c.s.log.Warn("heraldd: console template", "page", name, "err", err)
	}
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, "login.html", map[string]any{"Error": r.URL.Query().Get("error") != ""})
}

// login takes an admin-scope API key.
func (c *console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if !sameOrigin(r) || r.ParseForm() != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	key := c.s.keys[digest(r.PostForm.Get("key"))]
	if key == nil || !key.hasScope("admin") {
		c.s.log.Warn("heraldd: console login refused", "remote", r.RemoteAddr)
		http.Redirect(w, r, "/console/login?error=1", http.StatusSeeOther)
		return
	}
	id := random()
	c.mu.Lock()
	now := time.Now()
	for k, s := range c.sessions {
		if now.After(s.expires) {
			delete(c.sessions, k)
		}
	}
	c.sessions[digest(id)] = session{csrf: random(), expires: now.Add(8 * time.Hour)}
	c.mu.Unlock()
	c.s.log.Info("heraldd: console login", "key", keyName(key))
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/console", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: 8 * 3600})
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

// sameOrigin refuses cross-site form posts (a second line behind the
// CSRF token and the SameSite cookie).
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return r.Header.Get("Sec-Fetch-Site") != "cross-site"
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

type consoleHandler func(w http.ResponseWriter, r *http.Request, csrf string)

// with wants a live session, and on POST the session's CSRF token from
// the same origin.
func (c *console) with(h consoleHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(sessionCookie)
		var s session
		ok := false
		if err == nil {
			c.mu.Lock()
			s, ok = c.sessions[digest(ck.Value)]
			c.mu.Unlock()
		}
		if !ok || time.Now().After(s.expires) {
			http.Redirect(w, r, "/console/login", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
			if !sameOrigin(r) || r.ParseForm() != nil || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) != 1 {
				headers(w)
				http.Error(w, "forbidden: stale or cross-site form", http.StatusForbidden)
				return
			}
		}
		h(w, r, s.csrf)
	}
}

func (c *console) logout(w http.ResponseWriter, r *http.Request, _ string) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		c.mu.Lock()
		delete(c.sessions, digest(ck.Value))
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/console", MaxAge: -1})
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

func (c *console) lanes(w http.ResponseWriter, r *http.Request, csrf string) {
	st, err := c.s.lanes(r)
	data := map[string]any{"CSRF": csrf, "Page": "lanes", "Lanes": st, "Circuits": c.s.d.Circuits(), "StoreDown": err != nil,
		"Flash": r.URL.Query().Get("done")}
	if ss, err := c.s.outbox.SinkStatus(r.Context()); err == nil {
		data["Sinks"] = ss
	}
	if l, ok := c.s.storeLoad(); ok {
		data["Store"] = l
	}
	now := time.Now()
	if gs, err := c.s.outbox.Gaps(r.Context(), now.Add(-7*24*time.Hour), now); err == nil {
		data["Gaps"] = gs
	}
	c.render(w, "lanes.html", data)
}

func (c *console) laneAction(w http.ResponseWriter, r *http.Request, _ string) {
	lane, action := r.PathValue("lane"), r.PathValue("action")
	if !c.s.knownLane(r, lane) || (action != "pause" && action != "resume") {
		http.Error(w, "no such lane or action", http.StatusNotFound)
		return
	}
	q := c.s.d.Queue()
	f := q.Pause
	if action == "resume" {
		f = q.Resume
	}
	if err := f(r.Context(), lane); err != nil {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	c.s.log.Info("heraldd: console: lane "+action, "lane", lane)
	http.Redirect(w, r, "/console/?done="+url.QueryEscape(action+"d "+lane), http.StatusSeeOther)
}

func (c *console) dead(w http.ResponseWriter, r *http.Request, csrf string) {
	f, _ := deadFilter(r)
	out, err := c.s.dead(r, f)
	c.render(w, "dead.html", map[string]any{"CSRF": csrf, "Page": "dead", "Dead": out, "Lane": f.Lane,
		"StoreDown": err != nil, "Flash": r.URL.Query().Get("done")})
}

func (c *console) requeue(w http.ResponseWriter, r *http.Request, _ string) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || c.s.d.Queue().Requeue(r.Context(), id) != nil {
		http.Error(w, "no such dead letter", http.StatusNotFound)
		return
	}
	c.s.log.Info("heraldd: console: dead letter requeued", "id", id)
	http.Redirect(w, r, "/console/dead?done="+url.QueryEscape("requeued "+strconv.FormatInt(id, 10)), http.StatusSeeOther)
}

func (c *console) deadAll(w http.ResponseWriter, r *http.Request, _ string) {
	f := retry.Filter{Lane: r.PostForm.Get("lane"), States: []retry.State{retry.StateDead}}
	q := c.s.d.Queue()
	var n int
	var err error
	switch r.PathValue("action") {
	case "requeue":
		n, err = q.RequeueMatching(r.Context(), f)
	case "purge":
		n, err = q.Purge(r.Context(), f)
	default:
		http.Error(w, "no such action", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	done := r.PathValue("action") + "d " + strconv.Itoa(n)
	http.Redirect(w, r, "/console/dead?done="+url.QueryEscape(done), http.StatusSeeOther)
}

// message finds a message by ID or key.
func (c *console) message(w http.ResponseWriter, r *http.Request, csrf string) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	data := map[string]any{"CSRF": csrf, "Page": "messages", "Q": q}
	if q != "" {
		id, err := strconv.ParseInt(q, 10, 64)
		if err != nil {
			if kf, ok := c.s.st.retry.(retry.KeyFinder); ok {
				id, _ = kf.JobIDByKey(r.Context(), q)
			}
		}
		if v, status := c.s.view(r, id); status == http.StatusOK {
			data["Message"] = v
		} else {
			data["NotFound"] = true
		}
	}
	c.render(w, "messages.html", data)
}

// campaign lists the campaigns (50 a page, in key order), or shows one
// by key: its progress, with pause, resume and cancel.
func (c *console) campaign(w http.ResponseWriter, r *http.Request, csrf string) {
	key := strings.TrimSpace(r.URL.Query().Get("key"))
	data := map[string]any{"CSRF": csrf, "Page": "campaigns", "Key": key, "Flash": r.URL.Query().Get("done")}
	if key == "" {
		const page = 50
		list, err := c.s.campaigns.List(r.Context(), r.URL.Query().Get("after"), page)
		if err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		data["List"] = list
		if len(list) == page {
			data["Next"] = list[page-1].Campaign.Key
		}
	} else {
		if p, err := c.s.campaigns.Progress(r.Context(), key, c.s.outbox); err == nil {
			data["Campaign"] = p
		} else {
			data["NotFound"] = true
		}
	}
	c.render(w, "campaigns.html", data)
}

func (c *console) campaignAction(w http.ResponseWriter, r *http.Request, _ string) {
	key, action := r.PathValue("key"), r.PathValue("action")
	var err error
	switch action {
	case "pause":
		err = c.s.campaigns.Pause(r.Context(), key)
	case "resume":
		if err = c.s.campaigns.Resume(r.Context(), key); err == nil {
			c.s.run(key)
		}
	case "cancel":
		err = c.s.campaigns.Cancel(r.Context(), key)
	default:
		http.Error(w, "no such action", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "not done: "+err.Error(), http.StatusConflict)
		return
	}
	c.s.log.Info("heraldd: console: campaign "+action, "campaign", key)
	http.Redirect(w, r, "/console/campaigns?key="+url.QueryEscape(key)+"&done="+url.QueryEscape(action), http.StatusSeeOther)
}
