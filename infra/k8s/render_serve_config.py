#!/usr/bin/env python3
"""Write the RayService's serveConfigV2 (infra/k8s/rayservice.yaml) from the Serve config of the repository.

    python infra/k8s/render_serve_config.py           # rewrite the generated block in rayservice.yaml
    python infra/k8s/render_serve_config.py --check   # exit 1 if rayservice.yaml is out of date

serve/config.yaml is the one source of the application (import path, route prefix, deployments and their
settings). For Kubernetes three things change, and nothing else:

- ``http_options.host`` becomes ``0.0.0.0`` and ``http_options.port`` 8000: inside the pod, Serve's proxy must
  listen on the pod address for KubeRay's serve Service (ClusterIP, port 8000) to reach it. What reaches that
  Service is decided by ingress-serve.yaml and networkpolicy.yaml, and every request needs the API key.
- ``runtime_env.working_dir`` (and ``py_modules``) are dropped from each application: the code is in the image
  (infra/docker/Dockerfile), and a local ``working_dir: .`` means nothing inside a pod.
- Secrets never go into serveConfigV2 (it is stored in the RayService object, readable by anyone who can read the
  resource): ``env_vars`` whose names look like secrets are refused; the API key comes from the pods'
  environment (Secret ucr-serve through secretKeyRef).

Only PyYAML is needed.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve" / "config.yaml"
RAYSERVICE = REPO / "infra" / "k8s" / "rayservice.yaml"
BEGIN = "# BEGIN generated from serve/config.yaml by infra/k8s/render_serve_config.py"
END = "# END generated"
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", re.IGNORECASE)
LOCAL_ONLY_RUNTIME_ENV = ("working_dir", "py_modules")


def kubernetes_serve_config(local: dict) -> dict:
    """The serveConfigV2 content for a serve config written for `serve deploy` / `serve run` on a laptop."""
    out = copy.deepcopy(local)
    http = dict(out.get("http_options") or {})
    http.update(host="0.0.0.0", port=8000)
    out["http_options"] = http
    for app in out.get("applications", []):
        env = app.get("runtime_env")
        if not env:
            continue
        for key in LOCAL_ONLY_RUNTIME_ENV:
            env.pop(key, None)
        secret_like = [k for k in (env.get("env_vars") or {}) if SECRET_NAME.search(k)]
        if secret_like:
            raise SystemExit(f"application {app.get('name')!r}: env_vars {secret_like} look like secrets; give them "
                             "to the pods through a Secret (secretKeyRef) instead of the serve config")
        if not env:
            app.pop("runtime_env")
    return out


def render_block(config: dict, indent: str) -> str:
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=110)
    lines = [indent + BEGIN] + [indent + line if line else "" for line in body.splitlines()] + [indent + END]
    return "\n".join(lines)


def rendered_manifest(manifest_text: str, config: dict) -> str:
    match = re.search(rf"^([ \t]*){re.escape(BEGIN)}\n.*?^[ \t]*{re.escape(END)}$", manifest_text,
                      flags=re.MULTILINE | re.DOTALL)
    if not match:
        raise SystemExit(f"{RAYSERVICE}: markers '{BEGIN}' ... '{END}' not found inside serveConfigV2")
    block = render_block(config, match.group(1))
    return manifest_text[:match.start()] + block + manifest_text[match.end():]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if out of date")
    parser.add_argument("--serve-config", type=Path, default=SERVE_CONFIG)
    parser.add_argument("--manifest", type=Path, default=RAYSERVICE)
    args = parser.parse_args(argv)
    if not args.serve_config.exists():
        print(f"{args.serve_config} does not exist", file=sys.stderr)
        return 2
    config = kubernetes_serve_config(yaml.safe_load(args.serve_config.read_text()))
    text = args.manifest.read_text()
    new = rendered_manifest(text, config)
    if new == text:
        print(f"{args.manifest} is up to date with {args.serve_config}")
        return 0
    if args.check:
        print(f"{args.manifest} is out of date: run python infra/k8s/render_serve_config.py", file=sys.stderr)
        return 1
    args.manifest.write_text(new)
    print(f"wrote serveConfigV2 of {args.manifest} from {args.serve_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
