#!/bin/sh
# Create the secret files docker-compose.yaml reads: random values in ./secrets (ignored by git). The directory is
# mode 700 (only you, on the host); the files themselves are world-readable because Compose bind-mounts them into
# the containers as they are and the server runs as an unprivileged user (uid 1000) there.
# Existing files are kept. aws_credentials stays empty (instance role) unless you fill it in the AWS format.
set -eu
cd "$(dirname "$0")"
mkdir -p secrets
chmod 700 secrets
umask 022
for name in postgres_password mlflow_admin_password mlflow_flask_secret_key; do
  [ -s "secrets/$name" ] || python3 -c "import secrets; print(secrets.token_urlsafe(32))" > "secrets/$name"
done
[ -e secrets/aws_credentials ] || : > secrets/aws_credentials
ls -l secrets
