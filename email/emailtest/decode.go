package emailtest

import (
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-sasl"
)

func decodeCTE(cte string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
}

// loginServer is the server side of AUTH LOGIN (username, then password).
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func newLoginServer(check func(user, pass string) error) sasl.Server {
	return &loginServer{check: check}
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if len(response) > 0 { // initial response carries the username
			l.user = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(response)
		l.step++
		return []byte("Password:"), false, nil
	case 2:
		l.step++
		return nil, true, l.check(l.user, string(response))
	}
	return nil, true, errors.New("unexpected AUTH LOGIN step")
}
