#!/usr/bin/env bash
# One-shot initialisation of the compose stack (service airflow-init, runs as root):
#
#   1. no secret still holds a .env.example placeholder (docker/check-secrets.sh); the
#      other Airflow services wait for this job, so none starts with a placeholder;
#   2. the data volumes' folders (ggm-data at GGM_DATA_ROOT and the volumes mounted below it:
#      landing, lake, lake/shares, dropzone, sharing, dashboard, standins) exist and belong to the
#      runtime user (uid 50000, gid 0 in both images); Docker creates a fresh volume's root as
#      root, and every service that mounts one of them starts after this job;
#   3. the official image's entrypoint migrates the metadata database and creates the
#      admin user (_AIRFLOW_DB_MIGRATE, _AIRFLOW_WWW_USER_CREATE set by the compose file),
#      then the pools that bound each registry's concurrency are created or resized.
#
# Every step is idempotent, so `docker compose up` may run this on every start.
set -euo pipefail

: "${GGM_DATA_ROOT:?GGM_DATA_ROOT must be set (the mount point of the ggm-data volume)}"
: "${_AIRFLOW_WWW_USER_PASSWORD:?the admin password must come from .env (AIRFLOW_ADMIN_PASSWORD)}"
runtime_uid="${AIRFLOW_UID:-50000}"

/bin/bash "$(dirname "$0")/check-secrets.sh"

# Only the top-level folders are created and chowned: a recursive chown of a grown lake
# would make every start slow, and files below are written by the runtime user anyway.
for folder in "${GGM_DATA_ROOT}" "${GGM_DATA_ROOT}/landing" "${GGM_DATA_ROOT}/lake" \
              "${GGM_DATA_ROOT}/lake/shares" "${GGM_DATA_ROOT}/dropzone" "${GGM_DATA_ROOT}/runs" \
              "${GGM_DATA_ROOT}/sharing" "${GGM_DATA_ROOT}/dashboard" "${GGM_DATA_ROOT}/standins" \
              /opt/airflow/logs; do
  mkdir -p "${folder}"
  chown "${runtime_uid}:0" "${folder}"
  chmod 2775 "${folder}"
done
# Secrets kept on the volume (sharing token hashes) are for the runtime user only.
chmod 2770 "${GGM_DATA_ROOT}/sharing"

echo "Airflow version and database migration:"
/entrypoint airflow version
echo "Pools:"
exec /entrypoint python -c "from ggm_lakehouse.orchestration import ensure_pools; print(ensure_pools())"
