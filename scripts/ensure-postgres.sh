#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed, and that a
# non-root system user exists to run a server as (PostgreSQL refuses to run as root).
#
# Idempotent. On the fast path it prints exactly one line:
#   postgresql: <version> at <bindir>
# It never starts a server: the tests and the demo start their own throwaway cluster
# (testkit::pg), or use the one DATABASE_URL names.
#
# Installing needs root (CI runs as root); otherwise it prints the command to run and exits 1.
set -euo pipefail

# The user the server runs as when we are root. The Debian package creates it.
PG_USER=postgres

is_root() { [ "$(id -u)" -eq 0 ]; }

# Prints the directory holding initdb: PATH first, else the highest /usr/lib/postgresql/*/bin.
# A symlinked initdb (e.g. /usr/local/bin/initdb) is resolved to the directory it really lives
# in, which is where pg_ctl and postgres look for each other.
find_bindir() {
    local initdb real
    if initdb=$(command -v initdb 2>/dev/null) && [ -x "$initdb" ]; then
        real=$(readlink -f "$initdb" 2>/dev/null || printf '%s' "$initdb")
        dirname "$real"
        return 0
    fi
    local dir best=""
    # Version directories sort numerically ("9.6" < "15" < "16").
    while IFS= read -r dir; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            best=$dir
        fi
    done < <(
        for d in /usr/lib/postgresql/*/bin; do
            [ -d "$d" ] && printf '%s\n' "$d"
        done | sort -V
    )
    [ -n "$best" ] || return 1
    printf '%s\n' "$best"
}

install_postgres() {
    if ! is_root; then
        {
            echo "postgresql: initdb not found (looked in PATH and /usr/lib/postgresql/*/bin)."
            echo "Install it with:"
            echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql"
            echo "then run $0 again."
        } >&2
        exit 1
    fi
    echo "postgresql: not installed; installing the Debian package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql </dev/null
}

ensure_user() {
    if id -u "$PG_USER" >/dev/null 2>&1; then
        return 0
    fi
    if ! is_root; then
        # Not root: the server runs as the current user, no dedicated user needed.
        return 0
    fi
    echo "postgresql: creating system user '$PG_USER' to run the server as" >&2
    useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
        --shell /usr/sbin/nologin "$PG_USER"
}

main() {
    local bindir
    if ! bindir=$(find_bindir); then
        install_postgres
        if ! bindir=$(find_bindir); then
            echo "postgresql: installed the package but still no initdb in PATH or /usr/lib/postgresql/*/bin" >&2
            exit 1
        fi
    fi
    ensure_user

    local version
    # "initdb (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)" -> "15.14"
    version=$("$bindir/initdb" --version | sed -n 's/^[^0-9]*\([0-9][0-9.]*\).*$/\1/p')
    echo "postgresql: ${version:-unknown version} at $bindir"
}

main "$@"
