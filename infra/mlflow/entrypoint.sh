#!/bin/sh
# Start the tracking server with its passwords read from Docker secrets (files), never from the command line or a
# file of the repository. libpq (psycopg2) takes the PostgreSQL password from PGPASSWORD, so neither database URI
# below (the store's and the auth app's, in basic_auth.ini) contains one.
set -eu
secret() { tr -d '\r\n' < "/run/secrets/$1"; }
PGPASSWORD="$(secret postgres_password)"
MLFLOW_AUTH_ADMIN_PASSWORD="$(secret mlflow_admin_password)"
MLFLOW_FLASK_SERVER_SECRET_KEY="$(secret mlflow_flask_secret_key)"
export PGPASSWORD MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY
[ -s "${AWS_SHARED_CREDENTIALS_FILE:-/nonexistent}" ] || unset AWS_SHARED_CREDENTIALS_FILE  # instance role
set -- --backend-store-uri "postgresql://mlflow@postgres:5432/mlflow" \
       --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:?}" \
       --host 0.0.0.0 --port 5000 --workers "${MLFLOW_WORKERS:-2}" \
       --app-name basic-auth \
       --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:?}"
if [ -n "${MLFLOW_CORS_ALLOWED_ORIGINS:-}" ]; then
  set -- "$@" --cors-allowed-origins "$MLFLOW_CORS_ALLOWED_ORIGINS"
fi
exec mlflow server "$@"
