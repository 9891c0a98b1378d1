#!/usr/bin/env bash
# Local development stack: Ray head + MLflow server + S3 endpoint (moto) on 127.0.0.1.
#   infra/local/stack.sh up|down|status [--dir DIR] [--only ray,mlflow,s3] [...]   (see --help)
# Runs infra/local/stack.py with the project's interpreter: $UCR_PYTHON, else .venv/bin/python in the checkout.
# The services are started from that same interpreter, so Ray jobs run with the project's environment.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="${UCR_PYTHON:-$repo/.venv/bin/python}"
if [[ ! -x "$py" ]]; then
  echo "[stack] error: no Python at $py; run 'make test' (creates .venv) or set UCR_PYTHON" >&2
  exit 2
fi
exec "$py" "$here/stack.py" "$@"
