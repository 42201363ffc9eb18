#!/usr/bin/env bash
# Installs the pgvector extension (0.8.x) into the local PostgreSQL, for the cluster
# store. Debian bookworm has no binary package of it, so it is built from Debian
# trixie's source package against the installed server (about 15 s). Idempotent: does
# nothing when the extension is already installed. Needs root (apt-get, make install).
set -euo pipefail

PG_CONFIG="${PG_CONFIG:-$(ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -1)}"
if [[ -z "$PG_CONFIG" || ! -x "$PG_CONFIG" ]]; then
    echo "install-pgvector: no PostgreSQL server found (pg_config)" >&2
    exit 1
fi
SHAREDIR="$("$PG_CONFIG" --sharedir)"
if ls "$SHAREDIR"/extension/vector--0.8*.sql >/dev/null 2>&1; then
    exit 0
fi
PG_MAJOR="$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"

export DEBIAN_FRONTEND=noninteractive
SRC_LIST=/etc/apt/sources.list.d/palisade-trixie-src.sources
if [[ ! -f "$SRC_LIST" ]]; then
    cat > "$SRC_LIST" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
# Only the trixie source index is needed; don't let it change what installs.
apt-get update -qq -o Dir::Etc::sourcelist="$SRC_LIST" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0
if ! dpkg -s "postgresql-server-dev-$PG_MAJOR" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq "postgresql-server-dev-$PG_MAJOR" make gcc dpkg-dev >/dev/null
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
cd "$WORK"
apt-get source --download-only -qq pgvector
dpkg-source -x --no-check pgvector_*.dsc src >/dev/null
cd src
make -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
echo "install-pgvector: pgvector $(sed -nE "s/^default_version = '([^']+)'.*/\1/p" vector.control) installed for PostgreSQL $PG_MAJOR"
