"""``make test-image``: build the Dockerfile with buildah and run the image for real.

No Docker engine, image registry or GPU is needed, and nothing here is in the
Dockerfile only for this test: the base image is Debian bookworm made by
``debootstrap`` (with its own ``python3``, built with ``PYTHON_SOURCE=system``),
the uv image holds the uv binary this checkout already uses, and both are passed
as the Dockerfile's build arguments. Then, as the image's non-root user:

1. ``flexcnn --help`` (ENTRYPOINT + CMD) runs, as UID 1000 by default;
2. ``flexcnn optuna run sweeps/demo.yaml`` runs on a mounted runs volume and
   leaves files owned by UID 1000;
3. compose's ``optuna-gpu0`` and ``optuna-gpu1`` services (argv and environment
   resolved by a real compose implementation, ``podman-compose config``, plus
   ``--cpu --gpus 0``: no GPU here) run as two containers on one study in a
   throwaway PostgreSQL on the loopback (``tests/postgres.py``), with the
   password reaching them only as ``PGPASSWORD_FILE``; the study must finish
   with every trial run once, by both workers;
4. compose's ``wandb-gpu0`` service runs up to where it needs a W&B server;
5. no layer, config or history entry of the image holds the secrets passed at
   run time (a random W&B key and the database password), and uv, its cache
   and the source tree are not in the image.

It prints the build time and the image size. Cached between runs on one
machine, under ~/.cache/flexcnn-image (FLEXCNN_IMAGE_CACHE): the debootstrap
root filesystem (tar) and, in buildah's storage, the base image and the build's
layers. The Dockerfile's uv cache mount is pointed at this machine's uv cache,
so the ~3 GB of PyTorch/CUDA wheels `make setup` downloaded are not fetched again.

Run as root on Debian/Ubuntu with buildah and debootstrap installed (.ci/run
installs them):  make test-image   (or: uv run python -m tests.image [--cold]).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.postgres import SERVER_USER, PostgresCluster, _as_server_user, find_bindir, running_cluster

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("FLEXCNN_IMAGE_CACHE") or Path.home() / ".cache" / "flexcnn-image")
IMAGE = "localhost/flexcnn:image-test"
BASE_IMAGE = "localhost/flexcnn-test-base:bookworm"
SUITE = "bookworm"
BASE_PACKAGES = ["python3", "ca-certificates"]  # python3 is 3.11 in bookworm: the Dockerfile's PYTHON_VERSION
PYTHON_VERSION = "3.11"
N_TRIALS = 8  # the two-worker study; the demo uses the sweep's own run_cap
ISOLATION = "chroot"  # `podman run` (and buildah's default oci isolation) fail here on setrlimit
TIMEOUT = 900.0
PODMAN_COMPOSE = "podman-compose==1.6.0"  # the pin tests/test_deploy_files.py validates the file with


# --------------------------------------------------------------------------- small helpers

T0 = time.monotonic()
TIMES: dict[str, float] = {}


def say(message: str) -> None:
    print(f"[test-image {time.monotonic() - T0:6.0f}s] {message}", flush=True)


def fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    TIMES[name] = time.monotonic() - start
    say(f"{name}: {fmt(TIMES[name])}")


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = TIMEOUT, **kw: Any) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and out.returncode != 0:
        raise SystemExit(f"FAILED ({out.returncode}): {shlex.join(cmd)}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def buildah(*args: str, check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return run(["buildah", *args], check=check, timeout=timeout)


def image_exists(name: str) -> bool:
    return buildah("inspect", "--type", "image", name, check=False).returncode == 0


def uv_path() -> str:
    """The uv this checkout uses: $UV (the Makefile passes its own), else uv on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found or not Path(found).is_file():
        raise SystemExit("uv not found: run via `make test-image` (it sets UV) or put uv on PATH")
    return found


def check(condition: object, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {message}")
    say(f"ok: {message}")


# --------------------------------------------------------------------------- base and uv images


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), else deb.debian.org."""
    if os.environ.get("FLEXCNN_DEBIAN_MIRROR"):
        return os.environ["FLEXCNN_DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_text()
            if path.suffix == ".sources":
                for stanza in re.split(r"\n\s*\n", text):
                    uris = re.search(r"^URIs:\s*(.+)$", stanza, re.M)
                    suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                    if uris and suites and SUITE in suites.group(1).split():
                        return uris.group(1).split()[0]
            else:
                for line in text.splitlines():
                    m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                    if m and m.group(2) == SUITE:
                        return m.group(1)
    return "http://deb.debian.org/debian"


def base_image() -> None:
    """A bookworm minbase with python3, imported into buildah: reused, or from the cached tar, or debootstrapped."""
    if image_exists(BASE_IMAGE):
        say(f"base: {BASE_IMAGE} (cached image)")
        return
    tar = CACHE / f"rootfs-{SUITE}-minbase-{'-'.join(BASE_PACKAGES)}.tar"
    if not tar.is_file():
        mirror = debian_mirror()
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
        try:
            say(f"base: debootstrap --variant=minbase {SUITE} from {mirror}")
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(rootfs),
                    mirror,
                ],
                timeout=1200,
            )
            # apt's package lists and downloaded .debs are not part of a base image
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / junk).glob("*"):
                    if item.is_file():
                        item.unlink()
            for item in (rootfs / "var/cache/apt").glob("*.bin"):
                item.unlink()
            partial = tar.with_suffix(".partial")
            excludes = ["--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*"]
            run(["tar", "--numeric-owner", *excludes, "-C", str(rootfs), "-cf", str(partial), "."])
            partial.rename(tar)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
    say(f"base: importing {tar.name}")
    ctr = buildah("from", "scratch").stdout.strip()
    try:
        buildah("add", ctr, str(tar), "/")
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "/bin/bash",
            ctr,
        )
        buildah("commit", "--quiet", ctr, BASE_IMAGE)
    finally:
        buildah("rm", ctr, check=False)


def uv_image(uv: str) -> str:
    """A local image laid out like ghcr.io/astral-sh/uv (/uv, /uvx) holding this checkout's uv."""
    version = run([uv, "--version"]).stdout.split()[1]
    name = f"localhost/flexcnn-test-uv:{version}"
    if not image_exists(name):
        ctr = buildah("from", "scratch").stdout.strip()
        try:
            buildah("copy", ctr, uv, "/uv")
            uvx = Path(uv).with_name("uvx")
            if uvx.is_file():
                buildah("copy", ctr, str(uvx), "/uvx")
            buildah("commit", "--quiet", ctr, name)
        finally:
            buildah("rm", ctr, check=False)
    return name


# --------------------------------------------------------------------------- the build


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine verifies PyPI with (a TLS-inspecting proxy's CA may be in it)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def share_uv_cache(uv: str) -> Path:
    """Point the Dockerfile's `--mount=type=cache,target=/root/.cache/uv` at this machine's uv cache.

    buildah keeps cache mounts under $TMPDIR/buildah-cache/<target>; a symlink
    there to `uv cache dir` lets the build reuse the wheels `make setup` already
    downloaded. Returns the TMPDIR to build with. If buildah ever stores its
    cache elsewhere, the build still works; it only downloads again.
    """
    tmp = CACHE / "buildah-tmp"
    host_cache = Path(run([uv, "cache", "dir"]).stdout.strip())
    host_cache.mkdir(parents=True, exist_ok=True)
    link = tmp / "buildah-cache" / "root" / ".cache" / "uv"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == host_cache:
            return tmp
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(host_cache)
    return tmp


def build(uv: str, uv_img: str) -> None:
    args = {
        "BASE_IMAGE": BASE_IMAGE,
        "UV_IMAGE": uv_img,
        "PYTHON_SOURCE": "system",
        "PYTHON_VERSION": PYTHON_VERSION,
    }
    cmd = ["buildah", "bud", "--isolation", ISOLATION, "--layers", "-f", str(REPO / "Dockerfile"), "-t", IMAGE]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    ca = host_ca_bundle()
    if ca:
        cmd += ["--secret", f"id=ca_bundle,src={ca}"]
    env = {**os.environ, "TMPDIR": str(share_uv_cache(uv))}
    say(f"build: {shlex.join([*cmd, str(REPO)])}")
    log = CACHE / "build.log"
    with log.open("w") as out:
        proc = subprocess.run([*cmd, str(REPO)], stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1800)
    # buildah 1.28 leaves behind the working container it made for `RUN --mount=...,from=uv`
    listed = buildah("containers", "--all", "--format", "{{.ContainerID}} {{.ImageName}}").stdout
    for line in listed.splitlines():
        ctr, *image = line.split()
        if image == [uv_img]:
            buildah("rm", ctr, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"FAILED: the build ({proc.returncode}); last lines of {log}:\n{log.read_text()[-6000:]}")


# --------------------------------------------------------------------------- containers


def image_config() -> dict[str, Any]:
    return json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)


class Container:
    """A buildah working container of IMAGE; `start` runs argv in it like `docker run` would (entrypoint first)."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.id = buildah("from", "--pull-never", "--name", f"flexcnn-test-{name}-{os.getpid()}", IMAGE).stdout.strip()
        self.log = work / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, volumes: Sequence[str] = (), raw: bool = False
    ) -> None:
        config = image_config()["OCIv1"]["config"]
        argv = list(args) if raw else [*config.get("Entrypoint", []), *args]
        cmd = ["buildah", "run", "--isolation", ISOLATION]
        for key, value in (env or {}).items():
            cmd += ["--env", f"{key}={value}"]
        declared = config.get("Volumes") or {}
        for volume in volumes:
            cmd += ["--volume", volume]
            target = volume.split(":")[1]
            if target in declared:
                # buildah 1.28 mounts its own copy of an image VOLUME over a --volume at the same path;
                # `docker run -v` replaces the anonymous volume, so drop the declaration in this container.
                buildah("config", "--volume", f"{target}-", self.id)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*cmd, self.id, "--", *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def wait(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise SystemExit(
                f"FAILED: {self.name} still running after {timeout:.0f} s:\n{self.output()[-4000:]}"
            ) from None
        return code, self.output()

    def run(self, args: Sequence[str], **kw: Any) -> tuple[int, str]:
        self.start(args, **kw)
        return self.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def remove(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        buildah("rm", self.id, check=False)


# --------------------------------------------------------------------------- compose


def compose_services(uv: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The services as podman-compose resolves them (interpolation, anchors, profiles) with these variables."""
    out = run(
        [
            uv,
            "tool",
            "run",
            "--from",
            PODMAN_COMPOSE,
            "podman-compose",
            "--dry-run",  # `config` needs no podman then
            "-f",
            str(REPO / "agents" / "compose.yaml"),
            "--profile",
            "optuna",
            "--profile",
            "wandb",
            "config",
        ],
        env={**os.environ, **env},
        timeout=300,
    )
    return yaml.safe_load(out.stdout)["services"]


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """The variables compose sets: a key with no value is taken from the shell at `up`, unset here."""
    return {k: str(v) for k, v in (service.get("environment") or {}).items() if v is not None}


# --------------------------------------------------------------------------- PostgreSQL


def password_only_role(cluster: PostgresCluster, password: str) -> str:
    """Role `flexcnn` owning the `optuna` database, allowed in from 127.0.0.1 only with its password."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=cluster.port, user=SERVER_USER, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE ROLE flexcnn LOGIN PASSWORD %s", (password,))
        cur.execute("ALTER DATABASE optuna OWNER TO flexcnn")
    conn.close()
    hba = cluster.data_dir / "pg_hba.conf"
    hba.write_text("host all flexcnn 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    bindir = find_bindir()
    run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(cluster.data_dir), "reload"]))
    time.sleep(1)
    return f"postgresql+psycopg2://flexcnn@127.0.0.1:{cluster.port}/optuna"


# --------------------------------------------------------------------------- the checks


def not_owned_by(path: Path, uid: int) -> list[Path]:
    """Files and folders under path not owned by uid."""
    return [p for p in [path, *path.rglob("*")] if p.lstat().st_uid != uid]


def check_help_and_user(work: Path) -> None:
    ctr = Container("help", work)
    try:
        config = image_config()["OCIv1"]["config"]
        check(config.get("User") == "1000:1000", f"image user is 1000:1000 (got {config.get('User')!r})")
        check(config.get("Entrypoint") == ["flexcnn"], 'ENTRYPOINT is ["flexcnn"]')
        code, out = ctr.run(config.get("Cmd") or [])
        check(code == 0 and "agent" in out and "optuna" in out, "`flexcnn --help` (ENTRYPOINT + CMD) runs")
        code, out = ctr.run(["id", "-u"], raw=True)
        check(code == 0 and out.strip() == "1000", f"containers run as UID 1000 by default (got {out.strip()!r})")
    finally:
        ctr.remove()


def check_demo(work: Path, wandb_key: str) -> None:
    runs = work / "demo-runs"
    runs.mkdir()
    os.chown(runs, 1000, 1000)  # a fresh named volume would take the image's /app/runs owner, 1000
    ctr = Container("demo", work)
    try:
        study = "image-demo"
        args = ["optuna", "run", "sweeps/demo.yaml", "--study", study, "--storage", "runs/optuna-demo.log"]
        args += ["--workers", "2", "--wandb-mode", "offline"]
        with timed("demo study in a container"):
            code, out = ctr.run(args, env={"WANDB_API_KEY": wandb_key}, volumes=[f"{runs}:/app/runs"])
        check(code == 0, f"`flexcnn {' '.join(args)}` exits 0" + ("" if code == 0 else f"\n{out[-4000:]}"))
        summary = re.search(rf"study '{study}': .*FAIL 0 .*\((\d+)/(\d+) finished\)", out)
        check(summary and summary[1] == summary[2], "the leaderboard says every trial finished, none failed")
        trials = sorted((runs / study).glob("trial-*"))
        check(
            summary and len(trials) == int(summary[1]) and (runs / "optuna-demo.log").is_file(),
            f"the runs volume holds the journal and one folder per trial ({len(trials)})",
        )
        wrong = not_owned_by(runs, 1000)
        check(not wrong, f"every file on the runs volume belongs to UID 1000 ({len(wrong)} do not: {wrong[:3]})")
        check(wandb_key not in out, "the W&B key is not in the container's output")
    finally:
        ctr.remove()


def check_two_workers(work: Path, uv: str, pg_password: str) -> None:
    import optuna

    runs = work / "worker-runs"
    runs.mkdir()
    os.chown(runs, 1000, 1000)
    secret = work / "postgres_password"  # what compose mounts at /run/secrets/postgres_password
    secret.write_text(pg_password + "\n")
    secret.chmod(0o444)
    study = "image-workers"
    with running_cluster() as cluster:
        url = password_only_role(cluster, pg_password)
        variables = {
            "FLEXCNN_SWEEP": "sweeps/demo.yaml",
            "FLEXCNN_STUDY": study,
            "FLEXCNN_STORAGE": url,
            "FLEXCNN_N_TRIALS": str(N_TRIALS),
        }
        services = compose_services(uv, variables)
        workers: list[Container] = []
        try:
            with timed("two workers (compose optuna-gpu0, optuna-gpu1) on one PostgreSQL study"):
                names = ("optuna-gpu0", "optuna-gpu1")
                for name in names:
                    workers.append(Container(name, work))
                # Both start at once on the empty database, as `compose up` starts them: they take turns
                # creating Optuna's tables and the study (flexcnn.search.locks), no staggering needed.
                for name, ctr in zip(names, workers, strict=True):
                    svc = services[name]
                    env = service_env(svc)
                    check(env["FLEXCNN_STORAGE"] == url and "PGPASSWORD" not in env, f"{name}: compose's environment")
                    # --cpu --gpus 0: no GPU here; the rest is compose's argv and environment.
                    ctr.start(
                        [*svc["command"], "--cpu", "--gpus", "0"],
                        env=env,
                        volumes=[f"{runs}:/app/runs", f"{secret}:{env['PGPASSWORD_FILE']}:ro"],
                    )
                results = [ctr.wait() for ctr in workers]
            for ctr, (code, out) in zip(workers, results, strict=True):
                check(code == 0, f"{ctr.name} exits 0" + ("" if code == 0 else f"\n{out[-4000:]}"))
                check(pg_password not in out, f"{ctr.name}: the database password is not in its output")
            admin = f"postgresql+psycopg2://{SERVER_USER}@127.0.0.1:{cluster.port}/optuna"
            trials = optuna.load_study(study_name=study, storage=admin).get_trials(deepcopy=False)
        finally:
            for ctr in workers:
                ctr.remove()
    states = sorted({t.state.name for t in trials})
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    check(states and set(states) <= {"COMPLETE", "PRUNED"}, f"no trial failed, ran on or waits (states {states})")
    # Workers claim trials within the budget atomically (flexcnn.search.claims): exactly the budget.
    check(
        len(finished) == N_TRIALS,
        f"the study has exactly its budget of {N_TRIALS} finished trials, none lost or extra ({len(finished)})",
    )
    numbers = sorted(t.number for t in trials)
    check(numbers == list(range(len(trials))), "trial numbers are 0..N-1 with no gap or repeat")
    folders = sorted(p.name for p in (runs / study).glob("trial-*"))
    check(
        folders == sorted(f"trial-{n}" for n in numbers),
        f"one run folder per trial, none run twice ({len(folders)} folders)",
    )
    owners = {(t.user_attrs.get("worker") or {}).get("host") for t in trials}
    check(len(owners) == 2, f"both containers ran trials (worker hosts: {sorted(map(str, owners))})")
    wrong = not_owned_by(runs, 1000)
    check(not wrong, f"the workers' files belong to UID 1000 ({len(wrong)} do not)")


def check_wandb_service(work: Path, uv: str, wandb_key: str) -> None:
    secret = work / "wandb_api_key"
    secret.write_text(wandb_key + "\n")
    secret.chmod(0o444)
    svc = compose_services(uv, {})["wandb-gpu0"]
    env = service_env(svc)
    ctr = Container("wandb-gpu0", work)
    try:
        code, out = ctr.run(
            [*svc["command"], "--cpu", "--gpus", "0"], env=env, volumes=[f"{secret}:{env['WANDB_API_KEY_FILE']}:ro"]
        )
        check(
            code == 2 and "WANDB_SWEEP_ID" in out, "compose's wandb-gpu0 runs and asks for WANDB_SWEEP_ID (no server)"
        )
        check(wandb_key not in out, "wandb-gpu0: the key is not in its output")
    finally:
        ctr.remove()


def check_layers(work: Path, markers: Sequence[str]) -> int:
    """Export the image's layers uncompressed and grep them, its config and history for the markers; return bytes."""
    exported = work / "exported"
    with timed("export the image's layers"):
        buildah("push", "--quiet", "--disable-compression", IMAGE, f"dir:{exported}")
    files = sorted(p for p in exported.iterdir() if p.is_file())
    found = run(["grep", "-l", "-F", *[x for m in markers for x in ("-e", m)], *map(str, files)], check=False)
    check(found.returncode == 1, f"no layer, config or manifest holds a run-time secret ({found.stdout.strip()})")
    check(
        not any(m in buildah("inspect", "--type", "image", IMAGE).stdout for m in markers),
        "nor does `buildah inspect` (env, history)",
    )
    total = sum(p.stat().st_size for p in files)
    shutil.rmtree(exported)
    ctr = buildah("from", "--pull-never", IMAGE).stdout.strip()
    try:
        root = Path(buildah("mount", ctr).stdout.strip())
        leftovers = [p for p in ("usr/local/bin/uv", "src", "opt/venv/bin/uv") if (root / p).exists()]
        uv_cache = [p for p in (root / "root" / ".cache").rglob("*")] if (root / "root" / ".cache").is_dir() else []
        check(not leftovers and not uv_cache, f"uv, its cache and the source tree are not in the image {leftovers}")
        check((root / "opt/lock/uv.lock").read_bytes() == (REPO / "uv.lock").read_bytes(), "/opt/lock is this uv.lock")
    finally:
        buildah("umount", ctr, check=False)
        buildah("rm", ctr, check=False)
    return total


# --------------------------------------------------------------------------- main


def forget_everything() -> None:
    """--cold: drop the cached root filesystem, this test's images and buildah's layer cache."""
    say("cold: removing the cached rootfs, the test images and dangling layers")
    for tar in CACHE.glob("rootfs-*.tar"):
        tar.unlink()
    for line in buildah("containers", "--all", "--format", "{{.ContainerName}}").stdout.split():
        if line.startswith("flexcnn-test-"):
            buildah("rm", line, check=False)
    for image in buildah("images", "--format", "{{.Name}}:{{.Tag}}").stdout.split():
        if image.startswith(("localhost/flexcnn-test-", "localhost/flexcnn:")):
            buildah("rmi", "--force", image, check=False)
    buildah("rmi", "--prune", check=False)


def preflight() -> None:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        raise SystemExit("make test-image runs as root (buildah's chroot isolation, debootstrap)")
    if missing:
        raise SystemExit(f"{', '.join(missing)} missing: apt-get install -y buildah debootstrap (.ci/run does)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.image", description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="forget the cached rootfs and layers first")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, runs) afterwards")
    opts = parser.parse_args(argv)
    preflight()
    os.environ.setdefault("BUILDAH_ISOLATION", ISOLATION)
    CACHE.mkdir(parents=True, exist_ok=True)
    uv = uv_path()
    if opts.cold:
        forget_everything()
    work = Path(tempfile.mkdtemp(prefix="flexcnn-image-"))
    work.chmod(0o755)
    ok = False
    try:
        with timed("base image"):
            base_image()
        with timed("build"):
            build(uv, uv_image(uv))
        # A fresh random value per run: if it shows up in the image, the image leaked it.
        wandb_key, pg_password = secrets.token_hex(20), "pw-" + secrets.token_hex(16)
        check_help_and_user(work)
        check_demo(work, wandb_key)
        check_two_workers(work, uv, pg_password)
        check_wandb_service(work, uv, wandb_key)
        size = check_layers(work, [wandb_key, pg_password])
        ok = True
    finally:
        if ok and not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"work folder kept: {work}")
    say(
        f"PASSED in {fmt(time.monotonic() - T0)}: image {IMAGE}, {size / 1e9:.2f} GB uncompressed "
        f"({size:,} bytes); base {fmt(TIMES['base image'])}, build {fmt(TIMES['build'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
