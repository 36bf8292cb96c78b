package postgres_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/multiproc"
	"github.com/heraldhq/herald/postgres"
)

func TestMain(m *testing.M) {
	if os.Getenv(multiproc.EnvWorker) != "" {
		os.Exit(worker())
	}
	goleak.VerifyTestMain(m,
		// pgxpool's health-check goroutine ends shortly after Close.
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		// A pool's connection whose context was cancelled as the pool
		// closed (pgx's context watcher waits for the cancelled read to
		// return): it ends with that read, which a loaded CI machine can
		// delay past goleak's retries.
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgconn/ctxwatch.(*ContextWatcher).Watch.func1"))
}

// worker is a worker process of TestThreeWorkerProcessesShareTheQueue.
func worker() int {
	p, err := pgxpool.New(context.Background(), os.Getenv("HERALD_POSTGRES_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer p.Close()
	db, err := postgres.New(p, &postgres.Config{Schema: os.Getenv(multiproc.EnvTarget)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return multiproc.Worker(db.Retry())
}
