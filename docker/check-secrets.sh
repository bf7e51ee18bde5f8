#!/usr/bin/env bash
# Refuse to start while a secret still holds a placeholder from .env.example.
#
#   check-secrets.sh [COMMAND ARGS...]
#
# .env.example must carry non-empty placeholders (so `docker compose config` can
# validate the file), and a copied-but-unedited .env would otherwise start a stack
# whose "secrets" are published in the repository. Every placeholder contains
# REPLACE_ME; this script fails when any environment value does, and otherwise runs
# COMMAND (if given) in its place.
set -euo pipefail

readonly PLACEHOLDER="REPLACE_ME"

unfilled=()
while IFS= read -r -d '' entry; do
  if [[ "${entry#*=}" == *"${PLACEHOLDER}"* ]]; then
    unfilled+=("${entry%%=*}")
  fi
done < <(env -0)

if (( ${#unfilled[@]} > 0 )); then
  echo "refusing to start: ${unfilled[*]} still hold(s) the ${PLACEHOLDER} placeholder from .env.example;" \
       "put real secrets in .env (see docs/compose.md)" >&2
  exit 78  # EX_CONFIG
fi

if (( $# > 0 )); then
  exec "$@"
fi
