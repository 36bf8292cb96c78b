# Sourced by .ci/run. Starts PostgreSQL and Redis from Debian's packages on
# 127.0.0.1 with temporary data directories and exports their addresses:
#   HERALD_POSTGRES_URL  postgres://herald@127.0.0.1:PORT/herald?sslmode=disable
#   HERALD_REDIS_ADDR    127.0.0.1:PORT
# Tests that need a server read these; under CI=true a missing server is a
# failure, on a developer's machine a skip.

HERALD_SVC_DIR=""

# free_port prints the first port from $1 upward that nothing listens on.
free_port() {
  local port=$1
  while (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  echo "$port"
}
HERALD_PG_PORT="${HERALD_PG_PORT:-$(free_port 54329)}"
HERALD_REDIS_PORT="${HERALD_REDIS_PORT:-$(free_port 63799)}"

services_install() {
  local need=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

services_start() {
  services_install
  HERALD_SVC_DIR=$(mktemp -d /tmp/herald-ci-XXXXXX)
  chmod 755 "$HERALD_SVC_DIR"
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  local pgdata="$HERALD_SVC_DIR/pg"
  mkdir -p "$pgdata"
  local runas=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$pgdata"
    runas=(runuser -u postgres --)
  fi
  "${runas[@]}" "$pgbin/initdb" -D "$pgdata" -U herald --auth=trust -E UTF8 >/dev/null
  "${runas[@]}" "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $HERALD_PG_PORT -k $pgdata -c fsync=on -c max_connections=200" start >/dev/null
  "${runas[@]}" "$pgbin/createdb" -h 127.0.0.1 -p "$HERALD_PG_PORT" -U herald herald
  export HERALD_POSTGRES_URL="postgres://herald@127.0.0.1:$HERALD_PG_PORT/herald?sslmode=disable"
  # Failure tests restart the server with this command.
  export HERALD_PG_RESTART="${runas[*]} $pgbin/pg_ctl -D $pgdata -m fast -w restart -l $pgdata/log -o '-c listen_addresses=127.0.0.1 -p $HERALD_PG_PORT -k $pgdata -c fsync=on -c max_connections=200'"

  mkdir -p "$HERALD_SVC_DIR/redis"
  local redis_start="redis-server --bind 127.0.0.1 --port $HERALD_REDIS_PORT --dir $HERALD_SVC_DIR/redis --appendonly yes --appendfsync always --save '' --daemonize yes --pidfile $HERALD_SVC_DIR/redis/redis.pid --logfile $HERALD_SVC_DIR/redis/log"
  eval "$redis_start"
  # Failure tests crash (SIGKILL) and restart the server with this command.
  export HERALD_REDIS_RESTART="kill -9 \$(cat $HERALD_SVC_DIR/redis/redis.pid); sleep 0.3; $redis_start; for i in \$(seq 50); do redis-cli -h 127.0.0.1 -p $HERALD_REDIS_PORT ping >/dev/null 2>&1 && break; sleep 0.1; done"
  local up=
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p "$HERALD_REDIS_PORT" ping >/dev/null 2>&1 && { up=1; break; }
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "services: Redis did not answer on port $HERALD_REDIS_PORT:" >&2
    tail -5 "$HERALD_SVC_DIR/redis/log" >&2 || true
    return 1
  fi
  export HERALD_REDIS_ADDR="127.0.0.1:$HERALD_REDIS_PORT"
  echo "== services: PostgreSQL $HERALD_POSTGRES_URL, Redis $HERALD_REDIS_ADDR"
}

services_stop() {
  [ -n "$HERALD_SVC_DIR" ] || return 0
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -n "$pgbin" ] && [ -d "$HERALD_SVC_DIR/pg" ]; then
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$pgbin/pg_ctl" -D "$HERALD_SVC_DIR/pg" -m fast stop >/dev/null 2>&1 || true
    else
      "$pgbin/pg_ctl" -D "$HERALD_SVC_DIR/pg" -m fast stop >/dev/null 2>&1 || true
    fi
  fi
  # Redis is ended by its pid, never by its port: another run on this
  # machine may have taken the port since (a shutdown by port once stopped a
  # second CI run's server in mid-test).
  for pidfile in "$HERALD_SVC_DIR/pg/postmaster.pid" "$HERALD_SVC_DIR/redis/redis.pid"; do
    if [ -f "$pidfile" ]; then
      kill -9 "$(head -n1 "$pidfile")" >/dev/null 2>&1 || true
    fi
  done
  rm -rf "$HERALD_SVC_DIR"
}
