package eligibility_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/eligibility/eligibilitytest"
	"github.com/heraldhq/herald/secret"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	eligibilitytest.Run(t, func(t *testing.T) eligibility.Store { return eligibility.NewMemoryStore() }, nil)
}

// RFC 8058 one-click: the signed link's POST opts its user out of its
// topic; a forged, edited or expired link changes nothing; a GET only asks.
func TestOneClickUnsubscribe(t *testing.T) {
	t.Parallel()
	store := eligibility.NewMemoryStore()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	links := &eligibility.Links{BaseURL: "https://shop.example.com/unsubscribe", Key: secret.String("0123456789abcdef0123456789abcdef")}
	srv := httptest.NewServer(links.Handler(store, nil, func() time.Time { return now }))
	defer srv.Close()
	link := links.URL("ada", eligibility.CategoryTopic("promotions"), now)
	require.True(t, strings.HasPrefix(link, "https://shop.example.com/unsubscribe?"))
	u, _ := url.Parse(link)
	at := func(q url.Values) string { return srv.URL + "?" + q.Encode() }
	post := func(target string) int {
		res, err := http.Post(target, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	res, err := http.Get(at(u.Query()))
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	_, out, _ := store.OptedOut(t.Context(), "ada", []string{"category:promotions"})
	require.False(t, out, "a GET (a scanner following the link) changes nothing")

	forged := u.Query()
	forged.Set("u", "bob")
	require.Equal(t, http.StatusForbidden, post(at(forged)), "another user under the same signature")
	other := u.Query()
	other.Set("t", "category:order-updates")
	require.Equal(t, http.StatusForbidden, post(at(other)), "another topic")
	unsigned := u.Query()
	unsigned.Del("s")
	require.Equal(t, http.StatusForbidden, post(at(unsigned)))
	res, err = http.Post(at(u.Query()), "text/plain", strings.NewReader("List-Unsubscribe=One-Click"))
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusBadRequest, res.StatusCode, "not the RFC 8058 body")

	require.Equal(t, http.StatusOK, post(at(u.Query())))
	topic, out, err := store.OptedOut(t.Context(), "ada", []string{"channel:email", "category:promotions"})
	require.NoError(t, err)
	require.True(t, out)
	require.Equal(t, "category:promotions", topic)
	_, bob, _ := store.OptedOut(t.Context(), "bob", []string{"category:promotions"})
	require.False(t, bob)

	later := &eligibility.Links{Key: links.Key}
	_, _, err = later.Check(u.Query(), now.Add(181*24*time.Hour))
	require.ErrorIs(t, err, eligibility.ErrBadLink, "expired")
}
