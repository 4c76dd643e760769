# Shared by benches/peers and benches/ab: servers started as children on free
# ports, the origin stack, CPU from /proc, one wrk measurement of cached
# GET /users. Sourced after scripts/lib.sh, by scripts that set WORK (their
# temporary directory) and, for `measure`, TOKEN, THREADS, CONNECTIONS and
# DURATION.

# Every server is a direct child of this shell (started with `start`, never
# inside $(...)), so `wait` can reap it and its pid cannot be recycled
# before we are done with it.
CHILDREN=()
CLK_TCK=$(getconf CLK_TCK)

# stop_children: TERM to every server `start` started, then KILL to those
# still running after 5 s. Only these pids, never a name.
stop_children() {
  local pid
  for pid in "${CHILDREN[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${CHILDREN[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# stop_child PID: TERM (KILL after 5 s) to one server `start` started, reaped
# and dropped from CHILDREN, so its pid is never signalled again.
stop_child() {
  local pid=$1 kept=() p
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${CHILDREN[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  CHILDREN=("${kept[@]}")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME CMD...: runs CMD in the background, logging to $WORK/NAME.log;
# its pid is left in LAST_PID.
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  CHILDREN+=("$LAST_PID")
}

wait_port() {
  local port=$1 name=$2 deadline=$((SECONDS + 30))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "$name did not listen on $port; see $WORK/$name.log"
    sleep 0.1
  done
}

# proc_sum FILE AWK PID...: the sum over the PIDs still running of what
# the awk program prints from /proc/PID/FILE.
proc_sum() {
  local file=$1 program=$2 total=0 pid; shift 2
  for pid in "$@"; do
    [ -r "/proc/$pid/$file" ] || continue
    total=$((total + $(awk "$program" "/proc/$pid/$file")))
  done
  echo $total
}

# cpu_ticks PID...: user+system clock ticks of the processes and their children threads.
cpu_ticks() { proc_sum stat '{print $14 + $15}' "$@"; }

# context_switches PID...: voluntary and involuntary context switches so
# far of every thread of the processes still running.
context_switches() {
  local total=0 pid
  for pid in "$@"; do
    [ -d "/proc/$pid/task" ] || continue
    total=$((total + $(cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}')))
  done
  echo $total
}

# Every pid of a target: its main process, its children, plus extras.
target_pids() {
  local main=$1; shift
  echo "$main" $(pgrep -P "$main" || true) "$@"
}

# start_origin_stack BIN_DIR SECRET: one Redis (no persistence), FerretDB
# on SQLite under $WORK, and BIN_DIR/origin on it with 1,000 users seeded
# by BIN_DIR/loadgen. Leaves REDIS_PORT, REDIS_PID, MONGO_PORT, ORIGIN_PORT,
# UPSTREAM (host:port of the origin) and TOKEN (a user's bearer token).
start_origin_stack() {
  local bin=$1 secret=$2
  REDIS_PORT=$(free_port); MONGO_PORT=$(free_port); ORIGIN_PORT=$(free_port)
  start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
  REDIS_PID=$LAST_PID
  mkdir -p "$WORK/ferretdb"
  start ferretdb "$(ferretdb_path)" --handler=sqlite --sqlite-url="file:$WORK/ferretdb/" --state-dir="$WORK/ferretdb" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --debug-addr=- --telemetry=disable --log-level=error
  wait_port "$REDIS_PORT" redis
  wait_port "$MONGO_PORT" ferretdb
  start origin env MONGO_URI="mongodb://127.0.0.1:$MONGO_PORT/" MONGO_DB=origin JWT_SECRET_KEY=$secret BCRYPT_COST=4 \
    ORIGIN_LISTEN="127.0.0.1:$ORIGIN_PORT" LOG=warn "$bin/origin"
  wait_port "$ORIGIN_PORT" origin
  TOKEN=$("$bin/loadgen" seed --mongo-uri "mongodb://127.0.0.1:$MONGO_PORT/" --database origin --users 1000 --secret "$secret")
  UPSTREAM="127.0.0.1:$ORIGIN_PORT"
}

# target_url PORT|URL: the target's base URL; a bare port is plain HTTP on
# 127.0.0.1.
target_url() {
  case $1 in
    *://*) echo "$1" ;;
    *) echo "http://127.0.0.1:$1" ;;
  esac
}

# prime NAME PORT|URL: fills the target's cache and checks the next answer is
# a hit. An https:// target's certificate must chain to $TLS_CA.
prime() {
  local t=$1 url status
  url="$(target_url "$2")/users"
  local curl=(curl -s -H "authorization: Bearer $TOKEN")
  [ -n "${TLS_CA:-}" ] && curl+=(--cacert "$TLS_CA")
  "${curl[@]}" -o /dev/null "$url"
  status=$("${curl[@]}" -D - -o /dev/null "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
  case "$status" in HIT) ;; *) die "$t does not serve GET /users from its cache (X-Cache: ${status:-none}); see $WORK" ;; esac
}

# pss_kib PID...: proportional set size of the processes, KiB: memory
# shared between them (nginx's and HAProxy's cache zones) counted once.
pss_kib() { proc_sum smaps_rollup '/^Pss:/ {print $2}' "$@"; }

# measure NAME PORT|URL PID...: wrk for DURATION s on the target. Without
# WRK_PLAN: primes it, then loads its GET /users with TOKEN. With WRK_PLAN
# (a plan file, see benches/plan.lua): the plan's requests, with the
# headers in WRK_HEADERS (an array of `name: value`), no priming. Leaves
# RPS, REQUESTS, NON2XX, PLAN_WRAPPED (1 if a wrk thread went past the
# plan's end), CPU_US (CPU µs of the PIDs per request),
# TARGET_TICKS (their clock ticks) and WRK_TICKS (wrk's); dies when wrk saw
# socket errors or non-2xx answers.
measure() {
  local t=$1 target=$2; shift 2
  local before after out url load=()
  if [ -n "${WRK_PLAN:-}" ]; then
    local h
    for h in "${WRK_HEADERS[@]}"; do load+=(-H "$h"); done
    load+=(-s benches/plan.lua "$(target_url "$target")" -- "$WRK_PLAN" "$THREADS")
  else
    prime "$t" "$target"
    load=(-H "authorization: Bearer $TOKEN" "$(target_url "$target")/users")
  fi
  before=$(cpu_ticks "$@")
  # The subshell's reaped children are wrk alone: its cutime + cstime. A
  # failing wrk is the subshell's status, as `set -e` expects.
  out=$(wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" "${load[@]}" &&
    awk '{print "wrk-ticks", $16 + $17}' "/proc/$BASHPID/stat")
  after=$(cpu_ticks "$@")
  TARGET_TICKS=$((after - before))
  WRK_TICKS=$(echo "$out" | awk '/^wrk-ticks/ {print $2}')
  REQUESTS=$(echo "$out" | awk '/requests in/ {print $1}')
  RPS=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  NON2XX=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  PLAN_WRAPPED=0
  ! grep -q '^plan-wrapped' <<<"$out" || PLAN_WRAPPED=1
  if echo "$out" | grep -q "Socket errors" || [ -n "$NON2XX" ]; then
    die "$t: wrk saw errors or non-2xx answers: $(echo "$out" | grep -E 'Socket errors|Non-2xx')"
  fi
  NON2XX=${NON2XX:-0}
  CPU_US=$(python3 -c "print(($after-$before)/$CLK_TCK*1e6/max($REQUESTS,1))")
}
