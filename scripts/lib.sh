# Shared helpers for scripts/*: prerequisite checks, installs, phase timing.
# Sourced, not run.

FERRETDB_VERSION=v1.24.2
FERRETDB_MODULE=github.com/FerretDB/FerretDB

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# phase NAME CMD...: runs CMD and prints how long it took.
phase() {
  local name=$1; shift
  local start=$SECONDS
  say "$name"
  "$@" || die "$name failed"
  say "$name: done in $((SECONDS - start))s"
}

# Fails within seconds, naming each missing tool and how to get it.
# NEED_GO=0 / NEED_REDIS=0 skip the checks for FerretDB's and Redis's
# install paths when existing servers are used instead.
check_prerequisites() {
  local missing=()
  command -v cargo >/dev/null || missing+=("cargo (Rust): install rustup from your distribution or rustup.rs, then 'rustup default stable'")
  if [ "${NEED_GO:-1}" = 1 ]; then
    command -v go >/dev/null || missing+=("go (needed to build FerretDB 1.24.2): 'apt-get install -y golang' or the Go toolchain")
  fi
  if [ "${NEED_REDIS:-1}" = 1 ] && ! command -v redis-server >/dev/null; then
    if ! command -v apt-get >/dev/null; then
      missing+=("redis-server, and no apt-get to install it: install Redis with your package manager")
    elif [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
      missing+=("redis-server, and neither root nor sudo to install it: run 'apt-get install -y redis-server' as root")
    fi
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'missing prerequisites:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_redis() {
  if command -v redis-server >/dev/null; then
    return 0
  fi
  say "installing redis-server from Debian's packages"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # Debian's package starts a system-wide Redis on 6379; the project runs
  # its own servers, so stop that one if the package started it.
  if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    as_root systemctl stop redis-server || true
  fi
  command -v redis-server >/dev/null || die "redis-server still not found after installing"
}

# What the extended tests drive: a browser and its WebDriver, Prometheus
# (with promtool) and systemd-analyze, from Debian's packages.
ensure_operator_tools() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} from Debian's packages"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # Debian's package starts a system-wide Prometheus (and node exporter)
  # where systemd runs; the tests start their own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    as_root systemctl stop prometheus prometheus-node-exporter || true
  fi
  for tool in chromium chromedriver prometheus promtool systemd-analyze; do
    command -v "$tool" >/dev/null || die "$tool still not found after installing"
  done
}

# Where the ferretdb binary lives, found on PATH or under $(go env GOPATH)/bin.
ferretdb_path() {
  if command -v ferretdb >/dev/null; then
    command -v ferretdb
  else
    echo "$(go env GOPATH)/bin/ferretdb"
  fi
}

ensure_ferretdb() {
  local bin
  bin=$(ferretdb_path)
  # Read whole before matching (see install-ferretdb: SIGPIPE under pipefail).
  if [ -x "$bin" ] && grep -q "version: $FERRETDB_VERSION" <<<"$("$bin" --version 2>/dev/null || true)"; then
    return 0
  fi
  "$(dirname "${BASH_SOURCE[0]}")/install-ferretdb"
}

# Prints who listens on TCP port $1 on this machine, or nothing.
port_holder() {
  local port=$1
  if command -v ss >/dev/null; then
    ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -1
  elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "an unknown process"
  fi
}

# wait_for_port PORT NAME PIDFILE: until the port accepts, the process dies, or 30 s pass.
wait_for_port() {
  local port=$1 name=$2 pidfile=$3 deadline=$((SECONDS + 30))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      die "$name exited during start-up; see its log under run/"
    fi
    [ $SECONDS -lt $deadline ] || die "$name did not listen on $port within 30 s; see its log under run/"
    sleep 0.1
  done
}

# stop_pidfile FILE EXPECTED: stops the pid in FILE only if its command line
# still names EXPECTED (a recycled pid must never be killed).
stop_pidfile() {
  local file=$1 expected=$2 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$expected"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped $expected (pid $pid)"
  else
    say "$expected (pid $pid) is not running; nothing to stop"
  fi
  rm -f "$file"
}
