#!/usr/bin/env bash
# Debian packages some tests drive for real: chromium (tests/browser/, the Airflow UI in a
# headless browser), docker-compose 1.29 (`docker-compose config` on docker-compose.yml) and
# postgresql (tests/pg_server.py starts a throw-away server on loopback for the SQL connector).
#
# Installs what is missing with apt-get when we are root; otherwise only says what is missing
# and exits 0, so that `make test` still runs (those tests then skip with a stated reason).
# Override the browser binary with GGM_CHROMIUM=/path/to/chromium.
set -euo pipefail

CHROMIUM="${GGM_CHROMIUM:-/usr/bin/chromium}"
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_test_tools: missing ${missing[*]} and cannot install (needs root and apt-get);" \
         "the tests that drive them will be skipped (install with: sudo apt-get install -y ${missing[*]})"
    exit 0
fi

echo "ensure_test_tools: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null; then
    echo "ensure_test_tools: apt-get could not install ${missing[*]}; the tests that need them will be skipped"
    exit 0
fi
echo "ensure_test_tools: installed ${missing[*]}"
