package server

// Routes lists what s serves itself, as "METHOD /path" (the Inbox's
// client API, mounted at /v1/inbox/, is listed by inbox.Handler).
func Routes(s *Server) []string {
	var out []string
	for _, r := range append(s.apiRoutes(), s.console.routes()...) {
		out = append(out, r.method+" "+r.path)
	}
	return out
}
