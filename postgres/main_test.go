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
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
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
