package herald

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/sms"
)

// The worker gets the message in memory (Job.Decoded) instead of decoding
// its JSON; it must be exactly what the JSON says, and nothing the caller
// changes after Send may reach it.
func TestDetachedIsThePayloadAndSharesNothing(t *testing.T) {
	badge := 3
	m := Message{IdempotencyKey: "k", User: "u", Labels: []string{"a", "b"}, Category: "c",
		Push: &PushMessage{Provider: push.FCM, Message: push.Message{Token: "t", Notification: push.Notification{
			Title: "T", Badge: &badge, Data: map[string]string{"x": "1"},
			APNs: &push.APNsOverride{PushType: "alert"}, FCM: &push.FCMOverride{Data: map[string]string{"y": "2"}},
			WebPush: &push.WebPushOverride{Urgency: "high"}}}}}
	payload, err := json.Marshal(&m)
	require.NoError(t, err)
	d, ok := m.detached()
	require.True(t, ok)
	got, err := json.Marshal(d)
	require.NoError(t, err)
	require.JSONEq(t, string(payload), string(got))

	m.Labels[0] = "changed"
	m.Push.Notification.Data["x"] = "changed"
	m.Push.Notification.FCM.Data["y"] = "changed"
	*m.Push.Notification.Badge = 99
	m.Push.Notification.APNs.PushType = "changed"
	m.Push.Notification.WebPush.Urgency = "changed"
	m.Push.Token = "changed"
	after, err := json.Marshal(d)
	require.NoError(t, err)
	require.JSONEq(t, string(payload), string(after), "the caller's later changes reached the queued message")

	s := Message{IdempotencyKey: "k", SMS: &sms.Message{To: "+15550001111", Body: "hi"}}
	ds, ok := s.detached()
	require.True(t, ok)
	s.SMS.Body = "changed"
	require.Equal(t, "hi", ds.SMS.Body)

	for _, hard := range []Message{
		{Push: &PushMessage{Message: push.Message{Notification: push.Notification{APNs: &push.APNsOverride{Custom: map[string]any{"a": []any{1}}}}}}},
		{Push: &PushMessage{Message: push.Message{Notification: push.Notification{WebPush: &push.WebPushOverride{Actions: []map[string]string{{"a": "b"}}}}}}},
		{Inbox: &InboxItem{Title: "x"}},
	} {
		_, ok := hard.detached()
		require.False(t, ok, "a message with parts detached does not copy goes through its JSON")
	}
}
