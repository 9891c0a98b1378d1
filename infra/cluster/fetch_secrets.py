#!/usr/bin/env python3
"""Fetch the cluster's secrets from AWS Secrets Manager into files only the ``ray`` user can read.

The cluster launcher (infra/cluster/aws.yaml) runs this in every node's container before ``ray start``; the node's
instance profile is what grants ``secretsmanager:GetSecretValue`` on that one secret, so no key is ever written in a
file of this repository or passed on a command line. The secret is a JSON object:

    {"ray_auth_token": "...", "ucr_api_key": "...", "mlflow_tracking_username": "...",
     "mlflow_tracking_password": "..."}

and this writes (mode 600):
    ~/.ray/auth_token        Ray's default token file (RAY_AUTH_MODE=token reads it)
    ~/.mlflow/credentials    MLflow's credentials file (basic auth of the tracking server)
    ~/.ucr/env               ``export UCR_API_KEY=...``, sourced before ``ray start`` so Serve replicas inherit it

    python infra/cluster/fetch_secrets.py --secret-id ucr/cluster --region us-west-2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def render(secret: dict, home: Path) -> dict[Path, str]:
    """The files to write for one secret value (kept separate from AWS so it can be tested offline)."""
    missing = [k for k in ("ray_auth_token", "ucr_api_key") if not secret.get(k)]
    if missing:
        raise SystemExit(f"secret is missing {missing}; expected keys: ray_auth_token, ucr_api_key, "
                         "mlflow_tracking_username, mlflow_tracking_password")
    files = {home / ".ray" / "auth_token": secret["ray_auth_token"].strip(),
             home / ".ucr" / "env": f"export UCR_API_KEY={shlex.quote(secret['ucr_api_key'])}\n"}
    if secret.get("mlflow_tracking_username"):
        files[home / ".mlflow" / "credentials"] = (
            "[mlflow]\n"
            f"mlflow_tracking_username = {secret['mlflow_tracking_username']}\n"
            f"mlflow_tracking_password = {secret.get('mlflow_tracking_password', '')}\n")
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secret-id", required=True)
    p.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION"))
    a = p.parse_args()
    import boto3

    value = boto3.client("secretsmanager", region_name=a.region).get_secret_value(SecretId=a.secret_id)
    for path, text in render(json.loads(value["SecretString"]), Path.home()).items():
        write_private(path, text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
