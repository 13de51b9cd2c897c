"""deploy/: every recipe parses and builds its cluster object offline; nothing is submitted."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dask.config
import pytest
import yaml

from scaleseg.cluster import (
    PROFILES,
    apply_recipe,
    load_kubernetes_spec,
    load_recipe,
    make_cluster,
    validate_dask_resource,
    worker_groups,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
YAMLS = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
RECIPES = [p for p in YAMLS if "scaleseg" in (yaml.safe_load(p.read_text()) or {})]


def _rel(p: Path) -> str:
    return str(p.relative_to(DEPLOY))


def test_the_expected_recipes_exist():
    names = {_rel(p) for p in DEPLOY.rglob("*") if p.is_file()}
    for expected in (
        "local/cpu.yaml",
        "local/gpu.yaml",
        "slurm/jobqueue.yaml",
        "slurm/predict.sbatch",
        "kubernetes/kubecluster.yaml",
        "kubernetes/cluster.yaml",
        "kubernetes/daskjob.yaml",
        "kubernetes/operator-values.yaml",
        "docker/Dockerfile.cpu",
        "docker/Dockerfile.cuda",
        "remote/tls.yaml",
        "README.md",
    ):
        assert expected in names
    readme = (DEPLOY / "README.md").read_text()
    for p in DEPLOY.rglob("*"):
        if p.is_file() and p.name != "README.md" and not p.name.endswith(".dockerignore"):
            assert _rel(p) in readme, f"deploy/README.md does not list {_rel(p)}"


@pytest.mark.parametrize("path", YAMLS, ids=_rel)
def test_every_yaml_parses(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(d, dict) and d for d in docs)


@pytest.mark.parametrize("path", RECIPES, ids=_rel)
def test_every_recipe_validates(path):
    recipe = load_recipe(path)
    profile = recipe["scaleseg"]["cluster"]["profile"]
    assert profile in PROFILES or re.match(r"^(tcp|tls)://[\w.-]+:\d+$", profile)


def test_local_cpu_recipe_builds_its_cluster():
    from scaleseg.cluster import cluster_session

    with cluster_session(str(DEPLOY / "local" / "cpu.yaml"), n_workers=1) as client:
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["nthreads"] == 1
        assert type(client.cluster).__name__ == "LocalCluster"


def test_local_gpu_recipe_asks_for_dask_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the recipe would start a real LocalCUDACluster")
    recipe = load_recipe(DEPLOY / "local" / "gpu.yaml")
    assert recipe["scaleseg"]["cluster"]["profile"] == "local-cuda"
    with apply_recipe(recipe), pytest.raises(RuntimeError, match="local-cuda"):
        make_cluster("local-cuda")


# -- SLURM -------------------------------------------------------------------------------------


def _walltime_minutes(text: str) -> float:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 60 + m + s / 60


def test_slurm_job_script_carries_gpu_directives_and_resources():
    pytest.importorskip("dask_jobqueue")
    recipe = load_recipe(DEPLOY / "slurm" / "jobqueue.yaml")
    with apply_recipe(recipe):
        cluster = make_cluster("slurm", scale=False)
        try:
            script = cluster.job_script()
            assert not cluster.worker_spec  # nothing was asked for, nothing submitted
        finally:
            cluster.close()
    lines = script.splitlines()
    directives = [ln for ln in lines if ln.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:1" in directives
    assert "#SBATCH -p gpu" in directives
    assert any(re.match(r"#SBATCH --cpus-per-task=4$", d) for d in directives)
    (walltime,) = [d.split()[-1] for d in directives if d.startswith("#SBATCH -t ")]
    worker = next(ln for ln in lines if "distributed.cli.dask_worker" in ln)
    args = shlex.split(worker)
    assert args[args.index("--resources") + 1] == "GPU=1"
    assert args[args.index("--nthreads") + 1] == "4"
    lifetime = args[args.index("--lifetime") + 1]
    stagger = args[args.index("--lifetime-stagger") + 1]
    assert "--lifetime-restart" not in args  # a restarted worker would run into the walltime
    minutes = int(lifetime.removesuffix("m")) + int(stagger.removesuffix("m"))
    assert minutes < _walltime_minutes(walltime)
    assert "export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1" in lines


def test_a_site_file_overrides_the_recipe_value_by_value(tmp_path):
    """``--cluster recipe --cluster site.yaml``: the site's values win, the rest stays as
    shipped (a list such as job-extra-directives is replaced whole)."""
    pytest.importorskip("dask_jobqueue")
    site = tmp_path / "site.yaml"
    site.write_text("jobqueue:\n  slurm:\n    queue: short\n    cores: 2\n"
                    "    job-extra-directives: [--gres=gpu:a100:1, --constraint=ib]\n")  # fmt: skip
    recipe = load_recipe(DEPLOY / "slurm" / "jobqueue.yaml", site)
    assert recipe["scaleseg"]["cluster"]["profile"] == "slurm"  # from the recipe
    with apply_recipe(recipe):
        cluster = make_cluster("slurm", scale=False)
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    directives = [ln for ln in script.splitlines() if ln.startswith("#SBATCH")]
    assert "#SBATCH -p short" in directives and "#SBATCH --cpus-per-task=2" in directives
    assert "#SBATCH --gres=gpu:a100:1" in directives and "#SBATCH --constraint=ib" in directives
    assert "#SBATCH --gres=gpu:1" not in directives
    assert "#SBATCH --mem=30G" in directives  # the recipe's 32GB, untouched
    assert "--lifetime 110m" in script


def test_site_files_are_checked_like_recipes(tmp_path):
    recipe = DEPLOY / "slurm" / "jobqueue.yaml"
    code = tmp_path / "code.yaml"
    code.write_text("distributed:\n  worker:\n    preload: [evil]\n")
    with pytest.raises(ValueError, match=r"code\.yaml: distributed\.worker\.preload names Python"):
        load_recipe(recipe, code)
    typo = tmp_path / "typo.yaml"
    typo.write_text("scaleseg:\n  cluster:\n    torch-thread: 2\n")
    with pytest.raises(ValueError, match=r"typo\.yaml: scaleseg\.cluster\.torch-thread: unknown"):
        load_recipe(recipe, typo)
    with pytest.raises(FileNotFoundError, match="missing.yaml: no such cluster recipe"):
        load_recipe(recipe, tmp_path / "missing.yaml")
    bare = tmp_path / "bare.yaml"
    bare.write_text("jobqueue:\n  slurm:\n    cores: 2\n")
    with pytest.raises(ValueError, match="sets no scaleseg.cluster.profile"):
        load_recipe(bare)  # a site file alone is no recipe
    from scaleseg.cluster._client import _recipe_files

    with pytest.raises(ValueError, match="only recipe files"):
        _recipe_files(["local", str(bare)])


def test_cluster_repeated_on_the_command_line_lays_site_files_over_the_recipe():
    from scaleseg.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["predict", "--ensemble", "e", "--input", "i", "--output", "o",
                              "--cluster", "r.yaml", "--cluster", "s.yaml"])  # fmt: skip
    assert args.cluster == ["r.yaml", "s.yaml"]
    args = parser.parse_args(["predict", "--ensemble", "e", "--input", "i", "--output", "o"])
    assert args.cluster is None and args.cluster_by_default  # the configured profile


def test_a_second_recipe_session_keeps_the_library_defaults():
    """Leaving a recipe's context undoes what it set; the dask-jobqueue defaults registered
    meanwhile must survive it, or the next session in the same process (a notebook) fails.
    A fresh interpreter: dask_jobqueue must not be imported before the first session."""
    pytest.importorskip("dask_jobqueue")
    code = (
        "import sys, dask.config\n"
        "from scaleseg.cluster import apply_recipe, load_recipe, make_cluster\n"
        "assert 'dask_jobqueue' not in sys.modules\n"
        f"recipe = load_recipe({str(DEPLOY / 'slurm' / 'jobqueue.yaml')!r})\n"
        "for _ in range(2):\n"
        "    with apply_recipe(recipe):\n"
        "        make_cluster('slurm', scale=False).close()\n"
        "print(dask.config.get('jobqueue.slurm.interface', default='missing'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() != "missing"


def test_slurm_without_sbatch_is_refused_before_any_job(tmp_path, monkeypatch):
    """No SLURM here: a clear error at once, not an adaptive loop retrying forever."""
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    with apply_recipe(load_recipe(DEPLOY / "slurm" / "jobqueue.yaml")):
        with pytest.raises(RuntimeError, match="sbatch is not on PATH"):
            make_cluster("slurm")


def test_slurm_adaptive_scaling_from_the_recipe(monkeypatch):
    pytest.importorskip("dask_jobqueue")
    from scaleseg.cluster import _client

    # offline: there is no SLURM to ask whether it would take the worker job
    monkeypatch.setattr(_client, "_check_submittable", lambda cluster: None)
    recipe = load_recipe(DEPLOY / "slurm" / "jobqueue.yaml")
    with apply_recipe(recipe):
        cluster = make_cluster("slurm")  # minimum 0: adapt submits nothing while idle
        try:
            adaptive = cluster._adaptive
            assert (adaptive.minimum, adaptive.maximum) == (0, 16)
            assert adaptive.wait_count == 20
            assert not cluster.worker_spec
        finally:
            cluster.close()


def test_slurm_without_dask_jobqueue_is_clear(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails
    with pytest.raises(RuntimeError, match=r"scaleseg\[slurm\]"):
        make_cluster("slurm", scale=False)


def _scaleseg_argv(words: list[str]) -> list[str]:
    """Arguments after ``scaleseg`` with shell / Kubernetes variables replaced by values."""
    start = words.index("scaleseg") + 1
    argv = []
    for w in words[start:]:
        if w in ("||", "&&", ";"):
            break
        argv.append(re.sub(r"\$\(?\{?\w+\}?\)?", "x", w))
    return argv


def test_sbatch_script_is_valid_and_runs_a_gpu_batch():
    path = DEPLOY / "slurm" / "predict.sbatch"
    text = path.read_text()
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(path)], check=True)
    directives = dict(
        re.match(r"#SBATCH --([\w-]+)=?(.*)", ln).groups()
        for ln in text.splitlines()
        if ln.startswith("#SBATCH")
    )
    assert directives["gpus-per-task"] == "1" and "time" in directives
    joined = text.replace("\\\n", " ")
    worker = next(ln for ln in joined.splitlines() if "dask worker" in ln)
    assert "--resources GPU=1" in worker and "--scheduler-file" in worker
    command = next(
        ln for ln in joined.splitlines() if "scaleseg predict" in ln and not ln.startswith("#")
    )
    from scaleseg.cli import build_parser

    assert "${PREDICT_ARGS:-}" in command  # the user's extra options (empty by default)
    command = command.replace("${PREDICT_ARGS:-}", "")
    args = build_parser().parse_args(_scaleseg_argv(shlex.split(command)))
    assert args.command == "predict" and args.scheduler and args.performance_report


# -- Kubernetes --------------------------------------------------------------------------------


def test_kubernetes_cluster_spec_validates_with_a_gpu_worker_group():
    doc = load_kubernetes_spec(DEPLOY / "kubernetes" / "cluster.yaml")
    groups = worker_groups(doc)
    assert groups["worker"]["gpus"] == 1
    args = groups["worker"]["args"]
    assert args[args.index("--resources") + 1] == "GPU=1"
    assert (
        doc["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"]
        == (doc["metadata"]["name"])
    )


def test_daskjob_validates_and_its_command_parses():
    doc = yaml.safe_load((DEPLOY / "kubernetes" / "daskjob.yaml").read_text())
    validate_dask_resource(doc, source="daskjob.yaml")
    assert worker_groups(doc)["worker"]["gpus"] == 1
    sel = doc["spec"]["cluster"]["spec"]["scheduler"]["service"]["selector"]
    assert sel["dask.org/cluster-name"] == doc["metadata"]["name"]
    (job,) = doc["spec"]["job"]["spec"]["containers"]
    from scaleseg.cli import build_parser

    args = build_parser().parse_args(_scaleseg_argv(job["args"]))
    assert args.command == "predict"
    assert "$(DASK_SCHEDULER_ADDRESS)" in job["args"]  # set by the operator in the job pod


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: d["metadata"].update(name="Scale_Seg"), "DNS-1123"),
        (lambda d: d["spec"]["scheduler"].pop("service"), "missing required field 'service'"),
        (lambda d: d["spec"]["worker"]["spec"]["containers"][0]["args"].remove("GPU=1"), "GPU"),
        (lambda d: d["spec"]["worker"]["spec"].update(containers=[]), "non-empty"),
        (lambda d: d["spec"]["worker"].update(replicas="two"), "non-negative integer"),
        (
            lambda d: d["spec"]["worker"]["spec"]["containers"][0]["args"].append(8788),
            "list of strings",
        ),
        (
            lambda d: d["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"].update(
                memory="lots"
            ),
            "not a quantity",
        ),
        (lambda d: d.update(apiVersion="v1"), "expected 'kubernetes.dask.org/v1'"),
    ],
)
def test_kubernetes_validator_catches_broken_specs(breakage, message):
    good = yaml.safe_load((DEPLOY / "kubernetes" / "cluster.yaml").read_text())
    bad = copy.deepcopy(good)
    breakage(bad)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_dask_resource(bad, source="broken.yaml")


def test_kubecluster_recipe_resolves_its_spec_and_needs_dask_kubernetes():
    recipe = load_recipe(DEPLOY / "kubernetes" / "kubecluster.yaml")
    spec = Path(recipe["scaleseg"]["cluster"]["kubernetes"]["spec"])
    assert spec == (DEPLOY / "kubernetes" / "cluster.yaml").resolve()
    try:
        import dask_kubernetes  # noqa: F401
    except ImportError:
        with apply_recipe(recipe), pytest.raises(RuntimeError, match="dask-kubernetes"):
            make_cluster("kubernetes", scale=False)
    else:  # the operator's own template has the fields our spec provides
        from dask_kubernetes.operator import make_cluster_spec

        ref = make_cluster_spec(name="scaleseg", n_workers=2)
        ours = load_kubernetes_spec(spec)
        assert set(ref["spec"]) <= set(ours["spec"])
        assert set(ref["spec"]["scheduler"]) <= set(ours["spec"]["scheduler"])


def test_kubernetes_recipe_with_a_broken_spec_fails_before_any_contact(tmp_path):
    broken = tmp_path / "cluster.yaml"
    doc = yaml.safe_load((DEPLOY / "kubernetes" / "cluster.yaml").read_text())
    doc["kind"] = "Deployment"
    broken.write_text(yaml.safe_dump(doc))
    with dask.config.set({"scaleseg.cluster.kubernetes.spec": str(broken)}):
        with pytest.raises(ValueError, match="'Deployment' is not one of"):
            make_cluster("kubernetes", scale=False)


# top-level keys of the dask-kubernetes-operator chart's values.yaml (dask-kubernetes 2026.3.0)
_CHART_KEYS = {
    "image",
    "imagePullSecrets",
    "nameOverride",
    "fullnameOverride",
    "serviceAccount",
    "rbac",
    "podAnnotations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "volumes",
    "volumeMounts",
    "extraEnv",
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
    "livenessProbe",
    "kopfArgs",
    "metrics",
    "workerAllocation",
}


def test_operator_helm_values_use_only_chart_keys():
    values = yaml.safe_load((DEPLOY / "kubernetes" / "operator-values.yaml").read_text())
    assert set(values) <= _CHART_KEYS, set(values) - _CHART_KEYS
    assert set(values["image"]) <= {"name", "tag", "pullPolicy"}
    assert re.match(r"^\d{4}\.\d+\.\d+$", values["image"]["tag"])
    assert set(values["metrics"]) <= {"scheduler", "worker"}
    if "--all-namespaces" in values.get("kopfArgs", []):
        assert values["rbac"]["cluster"] is True  # watching all namespaces needs a ClusterRole


# -- Docker ------------------------------------------------------------------------------------

_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def _instructions(path: Path) -> list[tuple[str, str]]:
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path.name}: dangling line continuation"
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
        assert word in _INSTRUCTIONS, f"{path.name}: unknown instruction {word!r}"
    return out


@pytest.mark.parametrize("flavour", ["cpu", "cuda"])
def test_dockerfiles_parse_and_install_scaleseg(flavour):
    path = DEPLOY / "docker" / f"Dockerfile.{flavour}"
    ins = _instructions(path)
    kinds = [k for k, _ in ins]
    assert kinds[: kinds.index("FROM")] == ["ARG"] * kinds.index("FROM")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    args = dict(a.split("=", 1) for k, a in ins if k == "ARG" and "=" in a)
    base = next(a for k, a in ins if k == "FROM").replace(
        "${PYTHON_VERSION}", args["PYTHON_VERSION"]
    )
    m = re.match(r"python:(\d+)\.(\d+)", base)
    need = re.match(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert m and tuple(map(int, m.groups())) >= tuple(map(int, need.groups()))
    # everything copied exists, and the build-context ignore file lets it through
    ignore = (DEPLOY / "docker" / f"Dockerfile.{flavour}.dockerignore").read_text().splitlines()
    assert "**" in ignore  # deny by default: the .venv (gigabytes) never enters the context
    for k, a in ins:
        if k == "COPY":
            *sources, _ = a.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{path.name}: COPY {src} does not exist"
                assert f"!{src}" in ignore or f"!{src}/**" in ignore
    # the pip install line installs this package with extras that pyproject declares
    (pip,) = [a for k, a in ins if k == "RUN" and "pip install" in a]
    spec = re.search(r'pip install "?\.(\[[\w,-]+\])?"?', pip)
    assert spec, pip
    extras = spec.group(1).strip("[]").split(",") if spec.group(1) else []
    assert set(extras) <= set(pyproject["project"]["optional-dependencies"])
    if flavour == "cuda":
        assert "cuda" in extras
        env = " ".join(a for k, a in ins if k == "ENV")
        assert "NVIDIA_VISIBLE_DEVICES=all" in env
    assert "HF_HUB_OFFLINE=1" in " ".join(a for k, a in ins if k == "ENV")
    # exec form; the entrypoint only wraps, so k8s / sbatch can run `dask worker` or `scaleseg`
    (entry,) = [json.loads(a) for k, a in ins if k == "ENTRYPOINT"]
    (cmd,) = [json.loads(a) for k, a in ins if k == "CMD"]
    assert entry == ["tini", "--"] and cmd[0] == "scaleseg"
    assert pyproject["project"]["scripts"]["scaleseg"] == "scaleseg.cli:main"
    assert kinds.index("USER") > kinds.index("RUN")  # installs as root, runs unprivileged


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_recipe_configures_dask_security():
    from distributed.security import Security

    recipe = load_recipe(DEPLOY / "remote" / "tls.yaml")
    assert recipe["scaleseg"]["cluster"]["profile"].startswith("tls://")
    with apply_recipe(recipe):
        sec = Security()
    assert sec.require_encryption is True
    assert sec.tls_ca_file == "/etc/scaleseg/tls/ca.pem"
    assert sec.tls_client_cert.endswith("client.pem") and sec.tls_client_key.endswith(".key")
