package redisstore_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/redisstore"
	"github.com/heraldhq/herald/retry"
)

// Open the queue and capping stores on a Redis server, which must run
// with appendonly yes and appendfsync always for "accepted means durable"
// (New checks, and logs a warning when it is weaker). (Not run by go
// test: it needs a server.)
func ExampleNew() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	s, err := redisstore.New(ctx, rdb, &redisstore.Config{Prefix: "herald:"})
	if err != nil {
		fmt.Println(err)
		return
	}
	q, _ := retry.New(s, nil)
	_, _ = q.Enqueue(ctx, retry.EnqueueParams{Kind: "welcome", IdempotencyKey: "signup-42"})
	_ = s.Capping() // the capping store on the same server and prefix
}
