package postgres_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/email/emailtest"
	"github.com/heraldhq/herald/email/smtp"
	"github.com/heraldhq/herald/internal/multiproc"
	"github.com/heraldhq/herald/retry"
)

// A host saves an order and its confirmation email in one transaction:
// rolled back, there is no email to send; committed, it is sent once.
func TestDispatcherSendsInTheHostsTransaction(t *testing.T) {
	t.Parallel()
	p := pool(t)
	db, schema := freshDB(t, p)
	ctx := context.Background()
	_, err := p.Exec(ctx, "CREATE TABLE "+schema+".orders (id int PRIMARY KEY)")
	require.NoError(t, err)
	srv := emailtest.NewServer(t, nil)
	sender, err := smtp.New((&smtp.Config{}).UseFake(srv))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sender.Close() })
	d, err := herald.New(&herald.Config{Store: db.Retry(), Email: sender, Queue: retry.Config{PollInterval: 10 * time.Millisecond}})
	require.NoError(t, err)
	confirm := func(id string) herald.Message {
		return herald.Message{IdempotencyKey: "order-" + id, User: "u1", Transactional: true, Email: &email.Message{
			From: "shop@example.com", To: []string{"ada@example.com"}, Subject: "Order " + id, Text: "Confirmed"}}
	}

	tx, err := p.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "INSERT INTO "+schema+".orders VALUES (1)")
	require.NoError(t, err)
	rolled, err := d.SendTx(ctx, db.Tx(tx), confirm("1"))
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))

	tx, err = p.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "INSERT INTO "+schema+".orders VALUES (2)")
	require.NoError(t, err)
	committed, err := d.SendTx(ctx, db.Tx(tx), confirm("2"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	_, err = d.Queue().Job(ctx, rolled[0].ID)
	require.ErrorIs(t, err, retry.ErrNotFound, "rolled back with the order")
	require.NoError(t, d.Start(ctx))
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	require.Eventually(t, func() bool { return len(srv.Messages()) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { // the ack follows the send
		j, err := d.Queue().Job(ctx, committed[0].ID)
		return err == nil && j.State == retry.StateCompleted
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "Order 2", srv.Messages()[0].Header.Get("Subject"))
}

// The whole send path through PostgreSQL outages: sessions terminated
// twice and the server restarted while a Dispatcher with capping and
// tracking on the same server takes and sends messages.
func TestDispatcherSurvivesPostgresOutages(t *testing.T) {
	if testing.Short() {
		t.Skip("failure test: skipped with -short")
	}
	p := pool(t)
	db, _ := freshDB(t, p)
	ctx := context.Background()
	drop := func() {
		_, err := p.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`)
		if err != nil {
			t.Logf("terminate: %v", err)
		}
	}
	disruptions := map[int]func(){200: drop, 600: drop}
	if cmd := os.Getenv("HERALD_PG_RESTART"); cmd != "" {
		disruptions[900] = multiproc.Shell(t, cmd)
	} else if os.Getenv("CI") == "true" {
		t.Fatal("HERALD_PG_RESTART is not set in CI: .ci/run must provide the restart command")
	}
	multiproc.SurviveDispatcher(t, multiproc.Stores{Retry: db.Retry(), Capping: db.Capping(), Tracking: db.Tracking()}, disruptions)
}
