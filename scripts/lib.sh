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
check_prerequisites() {
  local missing=()
  command -v cargo >/dev/null || missing+=("cargo (Rust): install rustup from your distribution or rustup.rs, then 'rustup default stable'")
  command -v go >/dev/null || missing+=("go (needed to build FerretDB 1.24.2): 'apt-get install -y golang' or the Go toolchain")
  if ! command -v redis-server >/dev/null && ! command -v apt-get >/dev/null; then
    missing+=("redis-server, and no apt-get to install it: install Redis with your package manager")
  fi
  if ! command -v redis-server >/dev/null && [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    missing+=("redis-server, and neither root nor sudo to install it: run 'apt-get install -y redis-server' as root")
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
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "version: $FERRETDB_VERSION"; then
    return 0
  fi
  "$(dirname "${BASH_SOURCE[0]}")/install-ferretdb"
}
