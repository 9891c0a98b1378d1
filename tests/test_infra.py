"""Offline checks of everything under infra/: it parses, passes the validation the tools offer, agrees with the
repository (image, Ray version, entry points, presets, Serve config, pyproject) and keeps the security defaults.

No Docker engine, Kubernetes API or AWS account is needed; a renamed module, preset or Serve deployment breaks a test.
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
AWS = INFRA / "cluster" / "aws.yaml"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
SERVE_CONFIG = REPO / "serve" / "config.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT_PACKAGES = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
IMAGE_REPO = "registry.example.com/ucr"
BUCKET = "ucr-artifacts"


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifest(name: str) -> dict:
    (doc,) = _yaml_docs(K8S / name)
    return doc


def _infra_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and p.name.endswith(suffixes)
                  and "__pycache__" not in p.parts and "secrets" not in p.relative_to(INFRA).parts)


def _walk(node, path=()):
    """Yield (path, key, value) for every mapping entry of a parsed YAML/JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def _cluster_specs() -> dict[str, dict]:
    return {"RayCluster": _manifest("raycluster.yaml")["spec"],
            "RayJob": _manifest("rayjob.yaml")["spec"]["rayClusterSpec"],
            "RayService": _manifest("rayservice.yaml")["spec"]["rayClusterSpec"]}


def _pod_templates(spec: dict) -> list[tuple[str, dict]]:
    out = [("head", spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    return out


def _containers(spec: dict):
    for group, template in _pod_templates(spec):
        for c in template["spec"]["containers"]:
            yield group, c


def _dockerfile_args() -> dict[str, str]:
    args = {}
    for m in re.finditer(r"^ARG\s+(\w+)=(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE):
        args.setdefault(m.group(1), m.group(2))
    return args


# ------------------------------------------------------------------------------------------------ parsing
def test_every_yaml_and_json_file_parses():
    files = _infra_files(".yaml", ".yml", ".json")
    assert len(files) >= 10, files
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert _yaml_docs(path), f"{path} is empty"


def test_shell_scripts_parse():
    for path in _infra_files(".sh"):
        shell = "bash" if path.read_text().startswith("#!/usr/bin/env bash") else "sh"
        res = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, f"{path}: {res.stderr}"


def test_python_tools_compile():
    for path in _infra_files(".py"):
        compile(path.read_text(), str(path), "exec")


# ------------------------------------------------------------------------------------------------ cluster launcher
def _validate_launcher(config: dict) -> dict:
    """What `ray up` does before it contacts the cloud: fill in the provider's defaults, then Ray's schema checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_launcher_config_passes_ray_validation():
    config = yaml.safe_load(AWS.read_text())
    prepared = _validate_launcher(config)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    assert {"cpu-worker", "gpu-worker"} <= set(types)
    # the validation is real: a broken copy is refused
    import jsonschema

    broken = copy.deepcopy(config)
    broken["available_node_types"]["cpu-worker"]["resources"] = {"CPU": -1}
    with pytest.raises(jsonschema.ValidationError):
        _validate_launcher(broken)
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        _validate_launcher(broken)


def test_cluster_launcher_security_defaults():
    config = yaml.safe_load(AWS.read_text())
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head + workers
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    for rule in config["provider"]["security_group"]["IpPermissions"]:
        assert (rule["FromPort"], rule["ToPort"]) == (22, 22), "only SSH may be opened to the outside"
        assert all(r["CidrIp"] != "0.0.0.0/0" for r in rule.get("IpRanges", []))
    # the secrets helper it runs is in the repository and in the image
    setup = " ".join(config["setup_commands"])
    script = re.search(r"/home/ray/ucr/(\S+\.py)", setup).group(1)
    assert (REPO / script).is_file()
    assert f"COPY --chown=ray:users {script} ./{script}" in DOCKERFILE.read_text()


def test_fetch_secrets_writes_private_files(tmp_path):
    mod = _load_module(INFRA / "cluster" / "fetch_secrets.py", "ucr_fetch_secrets")
    files = mod.render({"ray_auth_token": "t" * 64, "ucr_api_key": "k y", "mlflow_tracking_username": "u",
                        "mlflow_tracking_password": "p"}, tmp_path)
    assert files[tmp_path / ".ray" / "auth_token"] == "t" * 64
    assert files[tmp_path / ".ucr" / "env"] == "export UCR_API_KEY='k y'\n"
    assert "mlflow_tracking_password = p" in files[tmp_path / ".mlflow" / "credentials"]
    for path, text in files.items():
        mod.write_private(path, text)
        assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(SystemExit):
        mod.render({"ray_auth_token": "t"}, tmp_path)


# ------------------------------------------------------------------------------------------------ KubeRay manifests
def _check_cluster_spec(spec: dict, where: str) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), where
    assert head["template"]["spec"]["containers"], where
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: the head Service must stay ClusterIP"
    assert spec["enableInTreeAutoscaling"] is True, where
    assert spec["authOptions"]["mode"] == "token", f"{where}: Ray token auth must be on"
    groups = spec["workerGroupSpecs"]
    assert {g["groupName"] for g in groups} >= {"cpu", "gpu"}, where
    for g in groups:
        for field in ("groupName", "replicas", "minReplicas", "maxReplicas", "template", "rayStartParams"):
            assert field in g, f"{where}: worker group {g.get('groupName')} lacks {field}"
        assert isinstance(g["rayStartParams"], dict)
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], f"{where}/{g['groupName']}"
        assert g["template"]["spec"]["containers"], f"{where}/{g['groupName']}"
    # rayStartParams is map[string]string in the CRD
    for params in [head["rayStartParams"]] + [g["rayStartParams"] for g in groups]:
        assert all(isinstance(v, str) for v in params.values()), f"{where}: rayStartParams values must be strings"
    gpu = next(g for g in groups if g["groupName"] == "gpu")
    assert all("nvidia.com/gpu" in c["resources"]["limits"] for c in gpu["template"]["spec"]["containers"])
    for group, template in _pod_templates(spec):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, f"{where}/{group}"
        for c in pod["containers"]:
            assert c["name"] and c["image"], f"{where}/{group}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, f"{where}/{group}"
            assert "ALL" in c["securityContext"]["capabilities"]["drop"], f"{where}/{group}"
            assert c["resources"]["requests"] and c["resources"]["limits"], f"{where}/{group}"
            env_from = [e["configMapRef"]["name"] for e in c.get("envFrom", [])]
            assert "ucr-config" in env_from, f"{where}/{group}"


def test_raycluster_has_the_fields_its_crd_requires():
    doc = _manifest("raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    assert doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"], "RayCluster")


def test_rayjob_has_the_fields_its_crd_requires():
    doc = _manifest("rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    assert isinstance(spec["entrypoint"], str) and "python -m jobs.pipeline" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(spec["rayClusterSpec"], "RayJob")


def test_rayservice_has_the_fields_its_crd_requires():
    doc = _manifest("rayservice.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    assert isinstance(spec["serveConfigV2"], str), "serveConfigV2 is a YAML string in the CRD"
    serve_cfg = yaml.safe_load(spec["serveConfigV2"])
    assert serve_cfg["applications"], "serveConfigV2 has no application"
    _check_cluster_spec(spec["rayClusterSpec"], "RayService")
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert 8000 in [p["containerPort"] for p in head["ports"]]


def test_the_three_manifests_describe_the_same_cluster():
    specs = _cluster_specs()

    def shape(spec):
        return {"head": spec["headGroupSpec"]["rayStartParams"],
                "groups": [(g["groupName"], g["minReplicas"], g["maxReplicas"],
                            [c["resources"] for c in g["template"]["spec"]["containers"]])
                           for g in spec["workerGroupSpecs"]],
                "version": spec["rayVersion"], "auth": spec["authOptions"]}

    shapes = {k: shape(v) for k, v in specs.items()}
    assert shapes["RayJob"] == shapes["RayCluster"] == shapes["RayService"]


def test_ray_version_is_the_same_everywhere():
    ray_version = version("ray")
    assert _dockerfile_args()["RAY_VERSION"] == ray_version
    for where, spec in _cluster_specs().items():
        assert spec["rayVersion"] == ray_version, where
    assert Requirement(next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray"))) \
        .specifier.contains(ray_version)


def test_every_manifest_references_the_same_image():
    tag = PYPROJECT["project"]["version"]
    expected = {"cpu": f"{IMAGE_REPO}:{tag}-cpu", "gpu": f"{IMAGE_REPO}:{tag}-gpu"}
    seen = set()
    for where, spec in _cluster_specs().items():
        for group, c in _containers(spec):
            wants_gpu = "nvidia.com/gpu" in c["resources"].get("limits", {})
            assert c["image"] == expected["gpu" if wants_gpu else "cpu"], f"{where}/{group}: {c['image']}"
            seen.add(c["image"])
    aws = yaml.safe_load(AWS.read_text())
    assert aws["docker"]["image"] == expected["cpu"]
    assert aws["available_node_types"]["gpu-worker"]["docker"]["worker_image"] == expected["gpu"]
    assert seen == set(expected.values())
    # the build commands documented in the Dockerfile and infra/README.md produce exactly these tags
    for image in expected.values():
        assert f"-t {image}" in DOCKERFILE.read_text()
        assert image in (INFRA / "README.md").read_text()


# ------------------------------------------------------------------------------------------------ entry points
def _command_strings() -> list[tuple[str, str]]:
    """Every command line the manifests and configs run, with where it comes from."""
    out = [("rayjob.yaml", _manifest("rayjob.yaml")["spec"]["entrypoint"])]
    aws = yaml.safe_load(AWS.read_text())
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands", "initialization_commands"):
        out += [(f"aws.yaml:{key}", c) for c in aws.get(key, [])]
    for path in (INFRA / "README.md", INFRA / "local" / "README.md"):
        text = path.read_text().replace("\\\n", " ")
        out += [(path.name, line) for line in text.splitlines() if "python -m " in line]
    return out


def _python_m_invocations() -> list[tuple[str, str, list[str]]]:
    found = []
    for where, command in _command_strings():
        for m in re.finditer(r"python -m ([A-Za-z_][\w.]*)((?:\s+(?!\||&&|;|#)[^\s|;&#`]+)*)", command):
            try:
                args = shlex.split(m.group(2))
            except ValueError:
                args = m.group(2).split()
            args = [a for a in args if a != "..."]
            found.append((where, m.group(1).rstrip("."), args))
    return found


def test_every_python_m_entry_point_resolves_to_a_module_of_the_repository():
    invocations = _python_m_invocations()
    modules = {mod for _, mod, _ in invocations}
    assert "jobs.pipeline" in modules, modules
    for where, module, _ in invocations:
        top = module.split(".")[0]
        if top in PROJECT_PACKAGES:
            rel = Path(*module.split("."))
            assert (REPO / rel.with_suffix(".py")).is_file() or (REPO / rel / "__main__.py").is_file(), \
                f"{where}: python -m {module} names no module file in the repository"
        else:
            assert importlib.util.find_spec(module) is not None, f"{where}: python -m {module} is not installed"


def test_entry_point_flags_and_presets_exist():
    """The flags the manifests pass are flags the job's parser accepts, and every --preset is a shipped preset."""
    presets = {p.stem for p in (REPO / "ucr" / "presets").glob("*.yaml")}
    for where, module, args in _python_m_invocations():
        if module.split(".")[0] not in PROJECT_PACKAGES:
            continue
        if "--preset" in args:
            preset = args[args.index("--preset") + 1]
            assert preset in presets, f"{where}: preset {preset!r} not in ucr/presets"
        if "--space" in args:
            space = args[args.index("--space") + 1]
            assert (REPO / space).is_file(), f"{where}: search space {space} not in the repository"
        # shell variables and <placeholders> stand for some value
        args = ["placeholder" if ("$" in a or "<" in a) else a for a in args]
        mod = importlib.import_module(module)
        if callable(getattr(mod, "parser", None)):
            try:
                mod.parser().parse_args(args)
            except SystemExit as e:
                pytest.fail(f"{where}: python -m {module} {' '.join(args)} is refused by its parser ({e})")


def _serve_config_in_manifest() -> dict:
    return yaml.safe_load(_manifest("rayservice.yaml")["spec"]["serveConfigV2"])


def test_serve_import_paths_and_deployments_exist_in_the_repository():
    for app in _serve_config_in_manifest()["applications"]:
        module, _, attr = app["import_path"].partition(":")
        path = REPO / Path(*module.split(".")).with_suffix(".py")
        assert path.is_file(), f"import_path {app['import_path']}: no {path.relative_to(REPO)}"
        tree = ast.parse(path.read_text())
        names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name)}
        names |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        assert attr in names, f"{path.relative_to(REPO)} defines no {attr!r}"
        package = path.parent  # deployments may live in any module of the application's package
        source = "\n".join(p.read_text() for p in sorted(package.glob("*.py")))
        for dep in app.get("deployments", []):
            assert f'name="{dep["name"]}"' in source or f"class {dep['name']}" in source, \
                f"deployment {dep['name']!r} is not defined in {package.relative_to(REPO)}/"


def test_rayservice_serve_config_is_generated_from_serve_config_yaml():
    if not SERVE_CONFIG.exists():
        pytest.skip("serve/config.yaml does not exist yet: nothing to compare serveConfigV2 with")
    render = _load_module(K8S / "render_serve_config.py", "ucr_render_serve_config")
    expected = render.kubernetes_serve_config(yaml.safe_load(SERVE_CONFIG.read_text()))
    assert _serve_config_in_manifest() == expected, \
        "infra/k8s/rayservice.yaml is out of date with serve/config.yaml: run python infra/k8s/render_serve_config.py"
    local_apps = {a["name"]: a for a in yaml.safe_load(SERVE_CONFIG.read_text())["applications"]}
    for app in expected["applications"]:
        assert app["import_path"] == local_apps[app["name"]]["import_path"]
        assert [d["name"] for d in app.get("deployments", [])] == \
            [d["name"] for d in local_apps[app["name"]].get("deployments", [])]


def test_render_serve_config_transformation(tmp_path):
    render = _load_module(K8S / "render_serve_config.py", "ucr_render_serve_config")
    local = {"http_options": {"host": "127.0.0.1", "port": 8123},
             "applications": [{"name": "a", "import_path": "serve.app:app", "route_prefix": "/",
                               "runtime_env": {"working_dir": ".", "env_vars": {"X": "1"}},
                               "deployments": [{"name": "D", "num_replicas": 2}]}]}
    out = render.kubernetes_serve_config(local)
    assert out["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert out["applications"][0]["runtime_env"] == {"env_vars": {"X": "1"}}
    assert out["applications"][0]["deployments"] == [{"name": "D", "num_replicas": 2}]
    assert local["http_options"]["host"] == "127.0.0.1"  # input untouched
    with pytest.raises(SystemExit):
        render.kubernetes_serve_config({"applications": [{"name": "a", "runtime_env": {"env_vars": {"UCR_API_KEY": "x"}}}]})
    # the block between the markers is replaced, the rest of the manifest kept
    manifest = tmp_path / "rs.yaml"
    manifest.write_text("spec:\n  serveConfigV2: |\n    " + render.BEGIN + "\n    old: 1\n    " + render.END
                        + "\n  rayClusterSpec: {}\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(local))
    assert render.main(["--serve-config", str(cfg), "--manifest", str(manifest), "--check"]) == 1
    assert render.main(["--serve-config", str(cfg), "--manifest", str(manifest)]) == 0
    assert render.main(["--serve-config", str(cfg), "--manifest", str(manifest), "--check"]) == 0
    doc = yaml.safe_load(manifest.read_text())
    assert yaml.safe_load(doc["spec"]["serveConfigV2"]) == out and doc["spec"]["rayClusterSpec"] == {}


# ------------------------------------------------------------------------------------------------ secrets
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET_ACCESS_KEY|SECRET_KEY|API_KEY|AUTH_TOKEN|ACCESS_KEY_ID|TOKEN"
                         r"|PRIVATE_KEY|CREDENTIALS?)$", re.IGNORECASE)
REFERENCE = re.compile(r"^\s*(\$\{?[\w:?\-]+|\"?\$\(|/run/secrets/|/var/run/secrets/)")


def _dict_nodes(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _dict_nodes(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _dict_nodes(v, path + (i,))


def literal_secrets_in_yaml(doc) -> list[str]:
    """Secret-like settings given a literal value (k8s env `value:`, compose `environment:`, plain mappings)."""
    problems = []
    for path, node in _dict_nodes(doc):
        where = "/".join(map(str, path)) or "/"
        if "name" in node and "value" in node and SECRET_NAME.search(str(node["name"])):
            problems.append(f"{where}: env {node['name']} has a literal value (use valueFrom.secretKeyRef)")
        for key, value in node.items():
            if isinstance(key, str) and SECRET_NAME.search(key) and isinstance(value, str) and value.strip():
                if not REFERENCE.match(value):
                    problems.append(f"{where}/{key}: literal value")
        if node.get("kind") == "Secret":
            problems.append(f"{where}: a Secret object is committed (create Secrets with kubectl, see infra/README.md)")
    return problems


TEXT_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "password in a URI": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@$]+:[^/\s@$]+@"),
    "assigned secret": re.compile(r"(?im)^[ \t]*(export[ \t]+)?[\w.]*(password|secret_access_key|api_key|auth_token)"
                                  r"[ \t]*[=:][ \t]*(?![\"']?\$)(?![ \t]*$)[\"']?[^\s\"'#]+"),
}


def literal_secrets_in_text(text: str) -> list[str]:
    return [name for name, pattern in TEXT_PATTERNS.items() if pattern.search(text)]


def test_secret_scanners_catch_what_they_should():
    assert literal_secrets_in_yaml({"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"}]})
    assert literal_secrets_in_yaml({"environment": {"POSTGRES_PASSWORD": "hunter2"}})
    assert literal_secrets_in_yaml({"kind": "Secret", "stringData": {"a": "b"}})
    assert not literal_secrets_in_yaml({"env": [{"name": "UCR_API_KEY", "valueFrom": {"secretKeyRef": {}}}]})
    assert not literal_secrets_in_yaml({"environment": {"POSTGRES_PASSWORD_FILE": "/run/secrets/pg",
                                                        "AWS_ACCESS_KEY_ID": "${AWS_ACCESS_KEY_ID}"}})
    assert literal_secrets_in_text("url: postgresql://mlflow:hunter2@db/mlflow")
    assert literal_secrets_in_text("aws_access_key_id = AKIAABCDEFGHIJKLMNOP")
    assert literal_secrets_in_text("admin_password = hunter2\n")
    assert not literal_secrets_in_text('PGPASSWORD="$(secret postgres_password)"\n# admin_password =\n')
    assert not literal_secrets_in_text("postgresql://mlflow@postgres:5432/mlflow http://127.0.0.1:8265")


def test_no_literal_secrets_in_infra():
    problems = []
    for path in _infra_files(".yaml", ".yml", ".json"):
        for doc in _yaml_docs(path) if path.suffix != ".json" else [json.loads(path.read_text())]:
            problems += [f"{path.relative_to(REPO)}: {p}" for p in literal_secrets_in_yaml(doc)]
    for path in _infra_files(".yaml", ".yml", ".json", ".ini", ".sh", "Dockerfile", ".sql", ".env"):
        problems += [f"{path.relative_to(REPO)}: {p}" for p in literal_secrets_in_text(path.read_text())]
    assert not problems, "\n".join(problems)


def test_credentials_come_from_secret_refs():
    for where, spec in _cluster_specs().items():
        for group, c in _containers(spec):
            env = {e["name"]: e for e in c.get("env", [])}
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"):
                assert "secretKeyRef" in env[name]["valueFrom"], f"{where}/{group}: {name}"
            if where == "RayService":
                assert env["UCR_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ucr-serve", \
                    f"{where}/{group}: Serve must run behind its API key"


# ------------------------------------------------------------------------------------------------ exposure
def test_dashboard_and_job_api_are_never_published():
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _yaml_docs(path):
            for p, key, value in _walk(doc):
                if key == "type" and value in ("LoadBalancer", "NodePort"):
                    pytest.fail(f"{path.name}: Service type {value} at {p}")
                if key == "serviceType":
                    assert value == "ClusterIP", f"{path.name}: {p}"
            if doc.get("kind") == "Ingress":
                for rule in doc["spec"]["rules"]:
                    for item in rule["http"]["paths"]:
                        svc = item["backend"]["service"]
                        assert svc["port"]["number"] == 8000 and svc["name"].endswith("-serve-svc"), \
                            f"{path.name}: an Ingress may only route to Serve"
                assert doc["spec"]["tls"], f"{path.name}: Ingress without TLS"
    # the NetworkPolicy selects every Ray pod
    policy = _manifest("networkpolicy.yaml")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for where, spec in _cluster_specs().items():
        for group, template in _pod_templates(spec):
            labels = template["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in selector.items()), f"{where}/{group} escapes the NetworkPolicy"


def test_only_the_autoscaling_head_gets_a_kubernetes_api_token():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _yaml_docs(K8S / "serviceaccount.yaml")}
    accounts = {name for kind, name in docs if kind == "ServiceAccount"}
    assert docs["ServiceAccount", "ucr-ray-worker"]["automountServiceAccountToken"] is False
    assert docs["ServiceAccount", "ucr-serve"]["automountServiceAccountToken"] is False
    expected_heads = {"RayCluster": "ucr-ray-head", "RayJob": "ucr-ray-job-head", "RayService": "ucr-serve-head"}
    for role_name, subjects, pinned in (("ucr-ray-autoscaler", ["ucr-ray-head"], True),
                                        ("ucr-ray-autoscaler-managed", ["ucr-ray-job-head", "ucr-serve-head"], False)):
        role, binding = docs["Role", role_name], docs["RoleBinding", role_name]
        assert [s_["name"] for s_ in binding["subjects"]] == subjects
        assert {v for rule in role["rules"] for v in rule["verbs"]} <= {"get", "list", "watch", "patch"}
        assert all("*" not in rule["resources"] for rule in role["rules"])
        assert {r["resources"][0] for r in role["rules"]} == {"pods", "rayclusters"}
        for rule in role["rules"]:
            if "patch" in rule["verbs"]:  # the autoscaler patches RayClusters and nothing else
                assert rule["resources"] == ["rayclusters"] and rule["verbs"] == ["get", "patch"]
                if pinned:  # the long-lived cluster's head may patch that one cluster only
                    assert rule["resourceNames"] == [_manifest("raycluster.yaml")["metadata"]["name"]]
    for where, spec in _cluster_specs().items():
        for group, template in _pod_templates(spec):
            sa = template["spec"]["serviceAccountName"]
            assert sa in accounts, f"{where}/{group}: unknown service account {sa}"
            if group == "head":
                assert sa == expected_heads[where], f"{where}: head runs as {sa}"
            else:  # no worker or replica ever gets a Kubernetes API token
                assert sa == ("ucr-serve" if where == "RayService" else "ucr-ray-worker"), f"{where}/{group}"
                assert template["spec"]["automountServiceAccountToken"] is False


def _policy(name: str) -> list[dict]:
    return json.loads((INFRA / "iam" / name).read_text())["Statement"]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _allows(statements: list[dict], action: str, resource: str) -> bool:
    """IAM evaluation for one action on one object ARN (no conditions): an explicit Deny wins over any Allow."""
    import fnmatch

    def matches(st):
        return action in _as_list(st["Action"]) and any(fnmatch.fnmatchcase(resource, r)
                                                       for r in _as_list(st["Resource"]))
    if any(st["Effect"] == "Deny" and matches(st) for st in statements):
        return False
    return any(st["Effect"] == "Allow" and matches(st) for st in statements)


def test_s3_policies_are_least_privilege_and_cover_the_bucket_in_use():
    names = ("ucr-s3-policy.json", "ucr-s3-serve-policy.json", "ucr-s3-mlflow-policy.json")
    for name in names:
        actions, resources = set(), set()
        for st in _policy(name):
            acts, res = _as_list(st["Action"]), _as_list(st["Resource"])
            assert all("*" not in a for a in acts), f"{name}: wildcard action in {st['Sid']}"
            assert all(a.startswith("s3:") for a in acts)
            actions |= set(acts)
            resources |= set(res)
        assert not actions & {"s3:PutBucketPolicy", "s3:DeleteBucket", "s3:PutBucketAcl", "s3:PutObjectAcl"}
        assert all(r.startswith(f"arn:aws:s3:::{BUCKET}") for r in resources), name
    ray, serve, mlflow_server = (_policy(n) for n in names)
    checkpoint = f"arn:aws:s3:::{BUCKET}/runs/demo/decomposer/final.pt"
    registered = f"arn:aws:s3:::{BUCKET}/mlflow-artifacts/1/models/m-1/artifacts/checkpoint.pt"
    # Ray jobs write their runs but never the MLflow server's artifacts (the registered champion)
    assert _allows(ray, "s3:PutObject", checkpoint) and _allows(ray, "s3:GetObject", registered)
    assert not _allows(ray, "s3:PutObject", registered) and not _allows(ray, "s3:DeleteObject", registered)
    # Serve replicas only read
    assert _allows(serve, "s3:GetObject", checkpoint) and _allows(serve, "s3:GetObject", registered)
    for action in ("s3:PutObject", "s3:DeleteObject"):
        assert not _allows(serve, action, checkpoint) and not _allows(serve, action, registered)
    # the MLflow server writes its artifacts and nothing else
    assert _allows(mlflow_server, "s3:PutObject", registered)
    assert not _allows(mlflow_server, "s3:GetObject", checkpoint)
    # the bucket the configs use is that bucket
    assert _manifest("configmap.yaml")["data"]["UCR_S3_BUCKET"] == BUCKET
    assert f"--env UCR_S3_BUCKET={BUCKET}" in yaml.safe_load(AWS.read_text())["docker"]["run_options"]
    for where, command in _command_strings():
        if where.endswith(".md"):
            continue
        for bucket in re.findall(r"s3://([\w.-]+)", command):
            assert bucket == BUCKET, f"{where}: bucket {bucket} is not covered by ucr-s3-policy.json"


def test_tracking_uri_is_the_same_for_kubernetes_and_the_cluster_launcher():
    uri = _manifest("configmap.yaml")["data"]["MLFLOW_TRACKING_URI"]
    assert uri.startswith("https://"), "MLflow carries credentials: TLS only"
    assert f"--env MLFLOW_TRACKING_URI={uri}" in yaml.safe_load(AWS.read_text())["docker"]["run_options"]


# ------------------------------------------------------------------------------------------------ MLflow
def test_production_mlflow_compose():
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yaml").read_text())
    mlflow, postgres = compose["services"]["mlflow"], compose["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert set(mlflow["secrets"]) >= {"postgres_password", "mlflow_admin_password", "mlflow_flask_secret_key"}
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith("./secrets/"), name
    assert all(p.startswith("${MLFLOW_BIND:-127.0.0.1}:") for p in mlflow["ports"]), "published on loopback only"
    assert mlflow["build"]["args"]["MLFLOW_VERSION"] == version("mlflow"), "server and client versions differ"
    entry = (INFRA / "mlflow" / "entrypoint.sh").read_text()
    for flag in ("--backend-store-uri \"postgresql://", "--artifacts-destination", "--allowed-hosts",
                 "--app-name basic-auth"):
        assert flag in entry, flag
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    ignore = (INFRA / "mlflow" / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore


# ------------------------------------------------------------------------------------------------ container image
def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rules: a pattern matches the path or a parent folder; `**` spans folders; the last
    matching pattern wins and `!` re-includes."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerfile_installs_the_project_from_pyproject():
    text = DOCKERFILE.read_text()
    args = _dockerfile_args()
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}-\$\{VARIANT\}", text, re.MULTILINE)
    assert re.search(r"^RUN pip install \. ", text, re.MULTILINE), "the image must install the project (pip install .)"
    # what pyproject.toml needs to build is copied, and nothing of it is excluded by .dockerignore
    copied = set(re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.MULTILINE))
    copied = {p for line in copied for p in line.split()}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]} | PROJECT_PACKAGES
    assert needed <= copied, f"Dockerfile does not copy {needed - copied}"
    patterns = _dockerignore_patterns()
    for path in sorted(needed) + ["ucr/presets/demo.yaml", "serve/app.py", "infra/cluster/fetch_secrets.py"]:
        assert not _ignored(path, patterns), f".dockerignore excludes {path}, which the image needs"
    # versions in the image agree with pyproject.toml (and with the Makefile's CPU torch)
    requires_python = SpecifierSet(PYPROJECT["project"]["requires-python"])
    py = args["PYTHON_TAG"].removeprefix("py")
    assert requires_python.contains(f"{py[0]}.{py[1:]}"), args["PYTHON_TAG"]
    deps = {Requirement(d).name: Requirement(d) for d in PYPROJECT["project"]["dependencies"]}
    assert deps["torch"].specifier.contains(args["TORCH_VERSION"])
    assert deps["ray"].specifier.contains(args["RAY_VERSION"])
    makefile_torch = re.search(r"^TORCH_CPU_VERSION \?= (\S+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    if makefile_torch:
        assert makefile_torch.group(1) == args["TORCH_VERSION"]
    assert "--index-url \"${TORCH_CPU_INDEX}\"" in text and "download.pytorch.org/whl/cpu" in text
    assert "libfluidsynth3" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"


def test_dockerignore_keeps_local_state_out():
    patterns = _dockerignore_patterns()
    for path in (".venv/bin/python", "runs/stack/stack.env", "demo_out/x.wav", ".git/HEAD",
                 "ucr/__pycache__/x.pyc", ".pytest_cache/v", "infra/mlflow/secrets/postgres_password", "mlflow.db"):
        assert _ignored(path, patterns), f".dockerignore lets {path} into the build context"


# ------------------------------------------------------------------------------------------------ local stack (offline)
def _stack_module():
    return _load_module(INFRA / "local" / "stack.py", "ucr_local_stack_offline")


def test_stack_cli_refuses_unknown_services():
    res = subprocess.run([sys.executable, str(INFRA / "local" / "stack.py"), "status", "--only", "ray,kafka"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "unknown service" in res.stderr


def test_stack_env_file_round_trips(tmp_path):
    mod = _stack_module()
    stack = mod.Stack(tmp_path, sys.executable)
    state = {"stack_id": "x", "services": {
        "ray": {"gcs_address": "127.0.0.1:1", "dashboard_url": "http://127.0.0.1:2", "auth_mode": "token",
                "token_path": str(tmp_path / "tok en"), "pid": 1},
        "mlflow": {"url": "http://127.0.0.1:3", "pid": 2},
        "s3": {"url": "http://127.0.0.1:4", "bucket": "b", "access_key_id": "A", "secret_access_key": "s'q", "pid": 3}}}
    stack.write_env(state)
    assert stack.env_path.stat().st_mode & 0o777 == 0o600
    out = subprocess.run(["bash", "-c", f"source {shlex.quote(str(stack.env_path))} && env"], capture_output=True,
                         text=True, check=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "tok en")
    assert env["AWS_SECRET_ACCESS_KEY"] == "s'q"
    assert env["RAY_API_SERVER_ADDRESS"] == "http://127.0.0.1:2" and env["RAY_ADDRESS"] == "127.0.0.1:1"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:3" and env["UCR_S3_URI"] == "s3://b"
    only_ray = {"stack_id": "x", "services": {"ray": state["services"]["ray"]}}
    assert not any(k.startswith("AWS_") for k in stack.env_vars(only_ray))


def test_stack_never_signals_an_unmarked_process():
    mod = _stack_module()
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert not mod.owned(proc.pid, "not-this-stack")
        assert proc.pid not in mod.marked_pids("not-this-stack")
        mod.stop_service("ray", {"pid": proc.pid}, "not-this-stack", grace=0.5)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_the_ingress_waits_as_long_as_serve_does():
    """The edge proxy must not cut off a separation that Serve still allows (it did at 300 s against 600 s)."""
    serve_config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    ingress = _manifest("ingress-serve.yaml")
    notes = ingress["metadata"]["annotations"]
    allowed = serve_config["http_options"]["request_timeout_s"]
    for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
        assert int(notes[key]) == allowed, key
    # the HTTP side's upload timeouts are in the config and fit within the request timeout
    args = serve_config["applications"][0]["args"]
    assert 0 < args["body_idle_timeout_s"] <= args["body_timeout_s"] < allowed
