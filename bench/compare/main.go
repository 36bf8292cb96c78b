// Command compare measures herald's queues beside River and asynq on the
// same back ends — the embedded store beside River on SQLite (both through
// modernc.org/sqlite, synchronous=FULL), the PostgreSQL store beside River
// on the same PostgreSQL, the Redis store beside asynq on the same Redis —
// in one run with interleaved rounds, for BENCHMARKS.md. It is a separate
// module so River and asynq never enter herald's own dependencies.
//
//	cd bench/compare && go run . -pg "$HERALD_POSTGRES_URL" -redis "$HERALD_REDIS_ADDR"
//	cd bench/compare && go run . -only sqlite,embedded -scenario end-to-end -rounds 5
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	_ "modernc.org/sqlite"

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/bench"
	"github.com/heraldhq/herald/postgres"
	"github.com/heraldhq/herald/redisstore"
	"github.com/heraldhq/herald/retry"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

var (
	pgURL     = flag.String("pg", os.Getenv("HERALD_POSTGRES_URL"), "PostgreSQL URL")
	redisAddr = flag.String("redis", os.Getenv("HERALD_REDIS_ADDR"), "Redis address")
	jobs      = flag.Int("jobs", 100_000, "jobs for the end-to-end scenario")
	enqJobs   = flag.Int("enqueue-jobs", 20_000, "jobs for the 16-producer enqueue scenario")
	rounds    = flag.Int("rounds", 3, "interleaved rounds")
	only      = flag.String("only", "", "comma-separated: run only the systems whose name contains one of these (postgres, redis, sqlite, embedded, herald, ...)")
	flights   = flag.Int("redis-flights", 0, "redisstore.Config.EnqueueFlights (0: the default)")
	scenario  = flag.String("scenario", "", "run only the scenarios whose name contains this (enqueue, end-to-end)")
)

type result struct {
	name, scenario string
	rate           float64
}

func run(ctx context.Context) error {
	flag.Parse()
	chosen := func(name string) bool {
		for _, o := range strings.Split(*only, ",") {
			if strings.Contains(name, o) {
				return true
			}
		}
		return false
	}
	var pool *pgxpool.Pool
	if chosen("herald/postgres") || chosen("river/postgres") {
		if *pgURL == "" {
			return errors.New("set -pg (or HERALD_POSTGRES_URL), or leave PostgreSQL out with -only")
		}
		cfg, err := pgxpool.ParseConfig(*pgURL)
		if err != nil {
			return err
		}
		cfg.MaxConns = 32
		if pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
			return err
		}
		defer pool.Close()
	}
	var rdb *redis.Client
	if chosen("herald/redis") || chosen("asynq/redis") {
		if *redisAddr == "" {
			return errors.New("set -redis (or HERALD_REDIS_ADDR), or leave Redis out with -only")
		}
		rdb = redis.NewClient(&redis.Options{Addr: *redisAddr})
		defer rdb.Close()
	}

	type system struct {
		name string
		e2e  func() (float64, error)
		enq  func() (float64, error)
	}
	systems := []system{
		{"herald/embedded", func() (float64, error) { return heraldEmbedded(ctx, true) }, func() (float64, error) { return heraldEmbedded(ctx, false) }},
		{"river/sqlite", func() (float64, error) { return riverSQLite(ctx, true) }, func() (float64, error) { return riverSQLite(ctx, false) }},
		{"herald/postgres", func() (float64, error) { return heraldPG(ctx, pool, true) }, func() (float64, error) { return heraldPG(ctx, pool, false) }},
		{"river/postgres", func() (float64, error) { return riverPG(ctx, true) }, func() (float64, error) { return riverPG(ctx, false) }},
		{"herald/redis", func() (float64, error) { return heraldRedis(ctx, rdb, true) }, func() (float64, error) { return heraldRedis(ctx, rdb, false) }},
		{"asynq/redis", func() (float64, error) { return asynqRedis(ctx, rdb, true) }, func() (float64, error) { return asynqRedis(ctx, rdb, false) }},
	}
	var results []result
	for r := 1; r <= *rounds; r++ {
		// A new order each round, so no system always runs first (or
		// right after another's cleanup) on a machine whose speed drifts.
		mrand.Shuffle(len(systems), func(i, j int) { systems[i], systems[j] = systems[j], systems[i] })
		for _, s := range systems {
			if !chosen(s.name) {
				continue
			}
			for _, sc := range []struct {
				name string
				fn   func() (float64, error)
			}{{"enqueue, 16 producers", s.enq}, {fmt.Sprintf("end-to-end, %d jobs, concurrency 16", *jobs), s.e2e}} {
				if !strings.Contains(sc.name, *scenario) {
					continue
				}
				rate, err := sc.fn()
				if err != nil {
					return fmt.Errorf("%s %s: %w", s.name, sc.name, err)
				}
				fmt.Fprintf(os.Stderr, "round %d %-16s %-40s %8.0f jobs/s\n", r, s.name, sc.name, rate)
				results = append(results, result{s.name, sc.name, rate})
			}
		}
	}
	fmt.Printf("| system | scenario | jobs/s (median of %d) |\n|---|---|---|\n", *rounds)
	seen := map[string]bool{}
	for _, r := range results {
		k := r.name + r.scenario
		if seen[k] {
			continue
		}
		seen[k] = true
		var rates []float64
		for _, x := range results {
			if x.name == r.name && x.scenario == r.scenario {
				rates = append(rates, x.rate)
			}
		}
		slices.Sort(rates)
		fmt.Printf("| %s | %s | %.0f |\n", r.name, r.scenario, rates[len(rates)/2])
	}
	return nil
}

func randName() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "b" + hex.EncodeToString(b)
}

func heraldPG(ctx context.Context, pool *pgxpool.Pool, e2e bool) (float64, error) {
	schema := randName()
	defer pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	db, err := postgres.New(pool, &postgres.Config{Schema: schema})
	if err != nil {
		return 0, err
	}
	if err := db.Migrate(ctx); err != nil {
		return 0, err
	}
	return heraldRun(ctx, db.Retry(), e2e)
}

func heraldRedis(ctx context.Context, rdb *redis.Client, e2e bool) (float64, error) {
	prefix := randName()
	defer func() {
		keys, _ := rdb.Keys(context.Background(), "{"+prefix+"}:*").Result()
		for len(keys) > 0 {
			n := min(1000, len(keys))
			rdb.Del(context.Background(), keys[:n]...)
			keys = keys[n:]
		}
	}()
	s, err := redisstore.New(ctx, rdb, &redisstore.Config{Prefix: prefix, EnqueueFlights: *flights})
	if err != nil {
		return 0, err
	}
	return heraldRun(ctx, s, e2e)
}

func heraldRun(ctx context.Context, s retry.Store, e2e bool) (float64, error) {
	if e2e {
		d, err := bench.EndToEnd(ctx, s, *jobs, 16, false)
		return float64(*jobs) / d.Seconds(), err
	}
	q, err := retry.New(s, nil)
	if err != nil {
		return 0, err
	}
	d, err := bench.Enqueue(ctx, q, 16, *enqJobs)
	return float64(*enqJobs) / d.Seconds(), err
}

type noopArgs struct{}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	done  *atomic.Int64
	total int64
	ch    chan struct{}
}

func (w *noopWorker) Work(context.Context, *river.Job[noopArgs]) error {
	if w.done.Add(1) == w.total {
		close(w.ch)
	}
	return nil
}

func riverPG(ctx context.Context, e2e bool) (float64, error) {
	// A database of its own, so River's tables start empty.
	admin, err := pgxpool.New(ctx, *pgURL)
	if err != nil {
		return 0, err
	}
	defer admin.Close()
	name := randName()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return 0, err
	}
	defer admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)")
	cfg, err := pgxpool.ParseConfig(*pgURL)
	if err != nil {
		return 0, err
	}
	cfg.ConnConfig.Database = name
	cfg.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	return riverRun(ctx, riverpgxv5.New(pool), e2e)
}

// riverSQLite runs River on a SQLite file of its own, through the same
// pure-Go SQLite as herald's embedded store, with the settings River's
// driver documents (one connection) and the same durability as herald
// (WAL, synchronous=FULL).
func riverSQLite(ctx context.Context, e2e bool) (float64, error) {
	dir, err := os.MkdirTemp("", "river-sqlite-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+dir+"/river.db?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	return riverRun(ctx, riversqlite.New(db), e2e)
}

func heraldEmbedded(ctx context.Context, e2e bool) (float64, error) {
	dir, err := os.MkdirTemp("", "herald-embedded-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	db, err := embedded.Open(dir+"/herald.db", nil)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return heraldRun(ctx, db.Retry(), e2e)
}

func riverRun[TTx any](ctx context.Context, driver riverdriver.Driver[TTx], e2e bool) (float64, error) {
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return 0, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return 0, err
	}
	total := int64(*jobs)
	if !e2e {
		total = int64(*enqJobs)
	}
	w := &noopWorker{done: &atomic.Int64{}, total: total, ch: make(chan struct{})}
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	// River's defaults fetch at most every 100ms (FetchCooldown), which
	// caps a 16-worker client near 160 jobs/s; tune it as a user would.
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 16}},
		Workers:           workers,
		FetchCooldown:     time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		return 0, err
	}
	if !e2e {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= total {
					if _, err := client.Insert(ctx, noopArgs{}, nil); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return 0, err
		}
		return float64(total) / time.Since(start).Seconds(), nil
	}
	params := make([]river.InsertManyParams, 1000)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{}}
	}
	for range *jobs / len(params) {
		if _, err := client.InsertMany(ctx, params); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	select {
	case <-w.ch:
	case <-time.After(10 * time.Minute):
		return 0, errors.New("river did not finish in 10 minutes")
	}
	elapsed := time.Since(start)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = client.Stop(sctx)
	return float64(*jobs) / elapsed.Seconds(), nil
}

func asynqRedis(ctx context.Context, rdb *redis.Client, e2e bool) (float64, error) {
	opt := asynq.RedisClientOpt{Addr: *redisAddr, DB: 1}
	flush := redis.NewClient(&redis.Options{Addr: *redisAddr, DB: 1})
	defer flush.Close()
	if err := flush.FlushDB(ctx).Err(); err != nil {
		return 0, err
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	total := int64(*jobs)
	if !e2e {
		total = int64(*enqJobs)
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= total {
					if _, err := client.EnqueueContext(ctx, asynq.NewTask("noop", bench.Payload)); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return 0, err
		}
		return float64(total) / time.Since(start).Seconds(), nil
	}
	for range total {
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("noop", bench.Payload)); err != nil {
			return 0, err
		}
	}
	var done atomic.Int64
	ch := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(context.Context, *asynq.Task) error {
		if done.Add(1) == total {
			close(ch)
		}
		return nil
	})
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: 16, LogLevel: asynq.ErrorLevel})
	start := time.Now()
	if err := srv.Start(mux); err != nil {
		return 0, err
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Minute):
		return 0, errors.New("asynq did not finish in 10 minutes")
	}
	elapsed := time.Since(start)
	srv.Shutdown()
	_ = rdb
	return float64(total) / elapsed.Seconds(), nil
}
