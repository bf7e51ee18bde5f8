#!/usr/bin/env bash
# Start a process of the standalone Spark cluster with RPC authentication (spark.authenticate).
#
#   spark-auth.sh COMMAND [ARGS...]      e.g. spark-class org.apache.spark.deploy.master.Master ...
#                                             spark-submit --master spark://spark-master:7077 ...
#
# The entrypoint of spark-master, spark-worker and spark-connect (docker-compose.yml). The master
# admits only workers and drivers that know the shared secret GGM_SPARK_AUTH_SECRET (from .env);
# Spark on a standalone master knows no other mechanism (docs/compose.md, "Spark authentication").
#
#   1. no secret still holds a .env.example placeholder (check-secrets.sh);
#   2. GGM_SPARK_AUTH_SECRET is set, long and made of characters a properties file keeps as they are;
#   3. it is written, with spark.authenticate=true, into a spark-defaults.conf of its own: mode 0600
#      in a fresh 0700 directory in memory (/dev/shm), next to copies of the files of the image's
#      SPARK_CONF_DIR (if any); SPARK_CONF_DIR then points there, so the Master, the Worker and
#      spark-submit (the driver) all load it as their defaults;
#   4. GGM_SPARK_AUTH_SECRET is removed from the environment and COMMAND replaces this script.
#
# So the secret never appears on a command line (`ps`) and not in the JVM's environment. The worker
# hands it to the executors it launches in their environment, which is Spark's own mechanism; the
# executors' command lines carry only -Dspark.authenticate=true.
#
# spark.authenticate.secret.file is not an option here: with a standalone master the driver refuses
# to start unless spark.authenticate.secret itself is set (checked against Spark 4.2.0).
set -euo pipefail

readonly MIN_SECRET_LENGTH=32
readonly SECRET_PATTERN='^[A-Za-z0-9._~+/=-]+$'
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if (( $# == 0 )); then
  echo "usage: spark-auth.sh COMMAND [ARGS...]" >&2
  exit 64  # EX_USAGE
fi

/bin/bash "${here}/check-secrets.sh"

secret="${GGM_SPARK_AUTH_SECRET:-}"
if [[ -z "${secret}" ]]; then
  echo "refusing to start: GGM_SPARK_AUTH_SECRET is not set; put the Spark cluster's shared secret in .env" \
       "(see .env.example)" >&2
  exit 78  # EX_CONFIG
fi
if (( ${#secret} < MIN_SECRET_LENGTH )) || ! [[ "${secret}" =~ ${SECRET_PATTERN} ]]; then
  echo "refusing to start: GGM_SPARK_AUTH_SECRET must be at least ${MIN_SECRET_LENGTH} characters of" \
       "A-Z a-z 0-9 . _ ~ + / = - (openssl rand -hex 32)" >&2
  exit 78
fi

# In memory where possible: /dev/shm is a tmpfs private to the container.
base="${GGM_SPARK_AUTH_DIR:-/dev/shm}"
if [[ ! -d "${base}" || ! -w "${base}" ]]; then
  base="${TMPDIR:-/tmp}"
fi
umask 077
conf_dir="$(mktemp -d "${base}/ggm-spark-conf.XXXXXX")"
chmod 700 "${conf_dir}"

# Keep what the image configures (log4j2.properties, spark-env.sh, non-secret defaults).
if [[ -n "${SPARK_CONF_DIR:-}" && -d "${SPARK_CONF_DIR}" ]]; then
  for file in "${SPARK_CONF_DIR}"/*; do
    [[ -f "${file}" ]] && cp "${file}" "${conf_dir}/"
  done
fi
defaults="${conf_dir}/spark-defaults.conf"
touch "${defaults}"
chmod 600 "${defaults}"
{
  echo
  echo "# Added by spark-auth.sh: RPC authentication with the cluster's shared secret (GGM_SPARK_AUTH_SECRET)."
  echo "spark.authenticate          true"
  echo "spark.authenticate.secret   ${secret}"
} >> "${defaults}"

unset secret GGM_SPARK_AUTH_SECRET
export SPARK_CONF_DIR="${conf_dir}"
exec "$@"
