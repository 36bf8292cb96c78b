package sms_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/sms"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidateNumber(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"+14155552671", "+447911123456", "+33612345678", "+5511987654321"} {
		require.NoError(t, sms.ValidateNumber(ok), ok)
	}
	for _, bad := range []string{"", "14155552671", "+1 415 555 2671", "+1-415-555-2671", "07700900123", "+0123456789",
		"+1555", "+12345678901234567", "+1415555267a", "+99912345678", "+441234"} {
		require.ErrorIs(t, sms.ValidateNumber(bad), sms.ErrInvalidNumber, bad)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := func() *sms.Message { return &sms.Message{To: "+14155552671", From: "+14155550100", Body: "hi"} }
	cases := []struct {
		name string
		mod  func(*sms.Message)
		want error
	}{
		{"valid", func(*sms.Message) {}, nil},
		{"alphanumeric sender", func(m *sms.Message) { m.From = "Herald Shop" }, nil},
		{"sender too long", func(m *sms.Message) { m.From = "HeraldShop12" }, sms.ErrInvalidMessage},
		{"sender digits only", func(m *sms.Message) { m.From = "12345" }, sms.ErrInvalidMessage},
		{"messaging service", func(m *sms.Message) { m.From, m.MessagingServiceSID = "", "MG"+strings.Repeat("a", 32) }, nil},
		{"both senders", func(m *sms.Message) { m.MessagingServiceSID = "MG" + strings.Repeat("a", 32) }, sms.ErrInvalidMessage},
		{"no sender", func(m *sms.Message) { m.From = "" }, sms.ErrInvalidMessage},
		{"bad to", func(m *sms.Message) { m.To = "4155552671" }, sms.ErrInvalidNumber},
		{"empty body", func(m *sms.Message) { m.Body = "  " }, sms.ErrInvalidMessage},
		{"body too long", func(m *sms.Message) { m.Body = strings.Repeat("a", 1601) }, sms.ErrInvalidMessage},
		{"validity too long", func(m *sms.Message) { m.ValidityPeriod = 11 * time.Hour }, sms.ErrInvalidMessage},
	}
	for _, tc := range cases {
		m := ok()
		tc.mod(m)
		err := sms.Validate(m)
		if tc.want == nil {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorIs(t, err, tc.want, tc.name)
		}
	}
}

func TestSegments(t *testing.T) {
	t.Parallel()
	cases := []struct {
		body     string
		enc      sms.Encoding
		units    int
		segments int
	}{
		{"", sms.GSM7, 0, 0},
		{strings.Repeat("a", 160), sms.GSM7, 160, 1},
		{strings.Repeat("a", 161), sms.GSM7, 161, 2},
		{strings.Repeat("a", 306), sms.GSM7, 306, 2},
		{strings.Repeat("a", 307), sms.GSM7, 307, 3},
		{strings.Repeat("€", 80), sms.GSM7, 160, 1}, // extension characters take two septets
		{strings.Repeat("€", 81), sms.GSM7, 162, 2},
		{"Prix: 5€ {promo}", sms.GSM7, 19, 1},
		{strings.Repeat("é", 160), sms.GSM7, 160, 1}, // é is in the GSM alphabet
		{strings.Repeat("ç", 70), sms.UCS2, 70, 1},   // ç is not (only Ç is)
		{strings.Repeat("ж", 71), sms.UCS2, 71, 2},
		{strings.Repeat("ж", 134), sms.UCS2, 134, 2},
		{strings.Repeat("ж", 135), sms.UCS2, 135, 3},
		{strings.Repeat("😀", 35), sms.UCS2, 70, 1}, // surrogate pairs count two
		{strings.Repeat("😀", 36), sms.UCS2, 72, 2},
	}
	for _, tc := range cases {
		got := sms.Segments(tc.body)
		require.Equal(t, sms.Segmentation{Encoding: tc.enc, Units: tc.units, Segments: tc.segments}, got, "%q", tc.body)
	}
}

func FuzzValidateNumber(f *testing.F) {
	for _, s := range []string{"+14155552671", "+", "++1", "+44 7700", "+999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if sms.ValidateNumber(s) == nil && (len(s) > 16 || s[0] != '+') {
			t.Fatalf("accepted %q", s)
		}
	})
}

func FuzzSegments(f *testing.F) {
	f.Add("hello €")
	f.Fuzz(func(t *testing.T, s string) {
		seg := sms.Segments(s)
		if seg.Units < 0 || seg.Segments < 0 || (seg.Units > 0) != (seg.Segments > 0) {
			t.Fatalf("bad segmentation %+v for %q", seg, s)
		}
	})
}
