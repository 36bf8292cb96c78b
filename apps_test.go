package herald_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
)

// Several apps per provider: a message's App picks its senders (here a
// second APNs app and a second email sender), with lanes of its own; an
// unknown app, or an app without a sender for the channel, is refused at
// the door naming the field.
func TestAppsPickTheirSenders(t *testing.T) {
	t.Parallel()
	other := pushtest.NewRecorder(push.APNs)
	otherMail := emailFunc(func(context.Context, *email.Message) (email.Receipt, error) { return email.Receipt{}, nil })
	kit := heraldtest.New(t, &heraldtest.Options{Configure: func(c *herald.Config) {
		c.Apps = map[string]herald.Senders{
			"driver": {Push: map[push.Provider]push.Sender{push.APNs: other}},
			"shop":   {Email: otherMail},
		}
	}})
	msg := func(key, app string) herald.Message {
		return herald.Message{IdempotencyKey: key, User: "ada", Transactional: true, App: app,
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "t", Notification: push.Notification{Title: key}}}}
	}
	kit.Send(t, msg("to-rider", ""))
	kit.Send(t, msg("to-driver", "driver"))
	kit.Settle(t)
	require.Equal(t, []string{"to-rider"}, kit.Push[push.APNs].Sent())
	require.Len(t, other.Sent(), 1)
	require.Equal(t, "to-driver", other.Sent()[0].Notification.Title)
	lanes := map[string]bool{}
	st, err := kit.Dispatcher.Queue().Stats(context.Background())
	require.NoError(t, err)
	for _, l := range st {
		lanes[l.Lane] = true
	}
	require.True(t, lanes["transactional.apns@driver"], "an app has lanes of its own: %v", lanes)

	for field, m := range map[string]herald.Message{
		"App":           msg("x", "nope"),
		"Push.Provider": msg("y", "shop"), // shop has email only
	} {
		_, err := kit.Dispatcher.Send(context.Background(), m)
		var fe *herald.FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, field, fe.Field)
	}
}

type emailFunc func(context.Context, *email.Message) (email.Receipt, error)

func (f emailFunc) Send(ctx context.Context, m *email.Message) (email.Receipt, error) {
	return f(ctx, m)
}
