"""The real workflow (Snakefile + rules/) through `snakemake --profile profiles/slurm` on a
throw-away single-node SLURM (slurm_cluster.py), and the faults a cluster run must survive.

Three kinds of tests:

* dry runs of the profile (no marks, seconds): every SLURM job carries the profile's partition,
  cpus_per_task = threads, and with `device: cuda` the heavy rules (train, eigen) ask for gpu=1.
* SLURM (`cluster` and `slow`; skipped with the reason unless root and the Debian packages are
  installed or installable): the tiny config gives byte-identical tables to a local run and every
  non-local rule went through sbatch with the profile's resources; a cuda config's train job is
  submitted with --gpus=1 (and fails inside, as there is no real GPU); a `scancel` of a running
  train is reported, leaves no declared output, and the rerun resumes and completes.
* local faults (`slow`, no SLURM needed): a view whose output weights do not fit fails in its eigen job
  with the error in the rule's log and in Snakemake's output, `--keep-going` still finishes the
  independent branches, and a `kill -9` of a running train of the modadd_mlp experiment leaves no
  declared output behind; the rerun resumes from the last checkpoint and ends bit-identical to an
  uninterrupted run.

They run in this order, but for the GPU and scancel tests, which come last: their runs go on in
threads from the tiny run's start, and what is left of them when the local faults start overlaps
them (each ends with a wait of 20-30 s: Snakemake exits after the poll interval it backed off to).

One cluster serves all SLURM tests (module-scoped fixture) under CLUSTER_TIME_LIMIT seconds in
total; the GPU and scancel runs go on in threads beside the tiny run, as all three mostly wait for
status polls. Every subprocess has a timeout, so a hang fails instead of blocking CI. Run with `-s`
to see the timings:

    .venv/bin/python -m pytest tests/cluster -s
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import slurm_cluster
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
from test_workflow import TINY  # noqa: E402 -- the small end-to-end config, one source of truth

PROFILE = ROOT / "profiles" / "slurm"
PROFILE_CONFIG = yaml.safe_load((PROFILE / "config.yaml").read_text())
PARTITION = PROFILE_CONFIG["default-resources"]["slurm_partition"]
# the harness's default partition is another one: jobs only land in PARTITION through `-p`
DECOY_PARTITION = "debug" if PARTITION != "debug" else "other"

# seconds for everything that uses the cluster (start, runs, teardown); it took 4-6 min at load 3-7
CLUSTER_TIME_LIMIT = 900
# cores the test node advertises: 4 one-core jobs side by side on the 2-core reference machine fill
# the gaps left by the plugin's status-poll back-off (jobs mostly start Python and wait)
NODE_CPUS = 4
# per snakemake run outside SLURM
LOCAL_TIMEOUT = 400

# What the profile's status polling becomes in the tests: the first poll after 2 s instead of 20 s
# (MinJobAge=300 in the harness is >= 3 x 2, so the plugin keeps using squeue).
FAST_POLLING = ("--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2")

# Rules that never go to SLURM (`localrule: True`) among those the tests build.
LOCAL_RULES = {"analyse", "claims_tms", "smooth_rotation", "overlap_curve", "claims_modadd", "claims", "spectra_table"}
# Rules that run on the GPU (resources gpu=1 with `device: cuda`); the others request none.
GPU_RULES = {"train", "eigen"}


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` merged in, dict by dict (a value that is not a dict replaces)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_with(**changes) -> dict:
    """TINY with nested changes merged in, e.g.
    config_with(device="cuda", experiments={"mlp": {"settings": {"epochs": 10}}}). Top-level sections
    TINY lacks (new ones the workflow grew) come from the shipped config.yaml, except those that name
    the shipped experiments (language_models), which TINY does not have."""
    shipped = {k: v for k, v in yaml.safe_load((ROOT / "config.yaml").read_text()).items() if k != "language_models"}
    cfg = {**shipped, **copy.deepcopy(TINY)}
    return merged(cfg, changes)


def tms_experiment(name: str, views: dict) -> dict:
    """TINY's TMS experiment `name` with only these views."""
    return {**copy.deepcopy(TINY["experiments"][name]), "views": copy.deepcopy(views)}


# TINY through SLURM, trimmed to what results/claims.csv needs with one TMS model (a) and one heatmap
# view (β = 1): 5 SLURM jobs instead of 10 (every SLURM job pays ~2 Snakemake start-ups plus polling,
# and all of it shares 2 cores with the other cluster runs): train of a and mlp; eigen of a (views
# plain, beta1) and of mlp (diag).
_TMS_VIEWS = {v: TINY["experiments"]["a"]["views"][v] for v in ("plain", "beta1")}
CLUSTER_TINY = {
    **config_with(),
    "experiments": {
        "a": tms_experiment("a", _TMS_VIEWS),
        "mlp": copy.deepcopy(TINY["experiments"]["mlp"]),
    },
}
CLUSTER_TINY["paper"]["tms"].update(experiments=["a"], heatmap_views=["beta1"])
CLUSTER_TINY["claims"]["tms_represented"] = {"a": TINY["claims"]["tms_represented"]["a"]}
del CLUSTER_TINY["paper"]["transformer"]  # its own end-to-end test is the local tiny run
# SLURM jobs CLUSTER_TINY's results/claims.csv takes, per rule
CLUSTER_TINY_JOBS = {"train": 2, "eigen": len(_TMS_VIEWS) + 1}

# train of mlp slow enough to be killed mid-run: ~5 s of training after ~3 s of start-up on the
# 2-core reference machine. The kill follows the second checkpoint (5 % in) within a second, which
# leaves seconds to spare; 400 epochs (~1 s of training) were too fast to hit reliably.
SLOW_MLP = config_with(
    experiments={"mlp": {"settings": {"epochs": 2000, "hidden": 256, "checkpoint_every": 100}}},
    paper={"modadd": {"fig3_epochs": [0, 100, 2000], "fig5_epochs": [1900, 2000]}},
)
SLOW_EPOCHS = list(range(0, 2001, 100))
# a TMS view whose output weights do not fit the model's 8 outputs (only its eigen job, which builds
# the model, can tell; a bad layer name is refused at parse time); one TMS experiment with one good
# view beside it, and the MLP, keep it short
BAD_LAYER = {
    **config_with(),
    "experiments": {
        "a": tms_experiment(
            "a",
            {
                "plain": TINY["experiments"]["a"]["views"]["plain"],
                "bad": {"outputs": "flatten", "output_weights": [1.0, 2.0], "top_k": 5},
            },
        ),
        "mlp": copy.deepcopy(TINY["experiments"]["mlp"]),
    },
}
BAD_LAYER["paper"] = {"modadd": BAD_LAYER["paper"]["modadd"]}
BAD_LAYER_ERROR = "output_weights: need 8 weights, one per output, got shape (2,)"
BAD_LAYER_TARGETS = ("results/spectra.csv",)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def make_workdir(path: Path, config: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]


def slurm_args(*args: str) -> tuple[str, ...]:
    """The documented cluster command line, plus the test's faster polling."""
    return ("--profile", str(PROFILE), "--workflow-profile", "none", *FAST_POLLING, *args)


def run_local(workdir: Path, *args: str, timeout: float = LOCAL_TIMEOUT) -> subprocess.CompletedProcess:
    """Snakemake without SLURM (profiles/default is picked up next to the Snakefile)."""
    return subprocess.run(
        snakemake_cmd(workdir, "--cores", "2", "--show-failed-logs", *args),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_slurm(cluster, workdir: Path, *args: str, cap: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(workdir, *slurm_args(*args)),
        cwd=workdir,
        env=cluster.environ(),
        capture_output=True,
        text=True,
        timeout=cluster.remaining(cap),
    )


def output_of(p: subprocess.CompletedProcess | str) -> str:
    return p if isinstance(p, str) else (p.stdout or "") + (p.stderr or "")


def ok(p: subprocess.CompletedProcess, what: str, cluster=None) -> None:
    if p.returncode != 0:
        extra = f"\n{cluster.log_tail()}" if cluster is not None else ""
        pytest.fail(f"{what} failed (rc={p.returncode}):\n{output_of(p)[-6000:]}{extra}")


def dry_run_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of each job in a dry run's output."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"(?:local)?rule (\w+):$", line)
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            jobs.append((rule, dict(re.findall(r"(\w+)=([^,]+)", line.split(":", 1)[1]))))
            rule = None
    return jobs


def rule_of(comment: str) -> str:
    """The rule of a job from the plugin's --comment (rule_<rule> or rule_<rule>_wildcards_<...>)."""
    m = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment)
    return m.group(1) if m else comment


def slurm_jobs(cluster, workdir: Path) -> list[dict[str, str]]:
    """Jobs slurmctld knows (finished ones too, MinJobAge=300) that ran in `workdir`."""
    return [j for j in cluster.squeue() if Path(j["workdir"]).resolve() == workdir.resolve()]


def descendants(pid: int) -> list[int]:
    table = slurm_cluster._proc_table()
    found, frontier = [], [pid]
    while frontier:
        frontier = [c for c, pp in table.items() if pp in frontier and c not in found]
        found.extend(frontier)
    return found


def argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def side_checkpoints(workdir: Path) -> list[Path]:
    """The mlp train job's resume copies (results/mlp/resume/), which survive a killed job by design."""
    return sorted((workdir / "results" / "mlp" / "resume").glob("epoch*.pt"))


def declared_mlp_outputs(workdir: Path) -> list[Path]:
    """The mlp train job's declared outputs (its checkpoint bundle and history) that exist."""
    return [f for f in (workdir / "results/mlp/checkpoints.pt", workdir / "results/mlp/history.csv") if f.exists()]


def resumed_epoch(workdir: Path) -> int | None:
    m = re.search(r"resuming from the checkpoint of epoch (\d+)", (workdir / "logs/mlp/train.log").read_text())
    return int(m.group(1)) if m else None


def assert_same_state(a, b, where: str = "") -> None:
    """Bit-identical nested checkpoint content (tensors compared with torch.equal)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, a.keys(), b.keys())
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_final_checkpoint(workdir: Path, reference: Path) -> None:
    import torch

    name = "results/mlp/checkpoints.pt"
    got = torch.load(workdir / name, weights_only=True)
    want = torch.load(reference / name, weights_only=True)
    assert got["steps"] == want["steps"] == SLOW_EPOCHS, got["steps"]
    last = SLOW_EPOCHS[-1]
    assert_same_state(got["states"][last], want["states"][last], f"states[{last}]")  # tensor by tensor
    assert_same_state(got, want, "checkpoints")  # every epoch's state dict, meta too
    assert (workdir / "results/mlp/history.csv").read_bytes() == (reference / "results/mlp/history.csv").read_bytes()


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path, interval: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc={proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def background_snakemake(cmd: list[str], log: Path, cwd: Path, env=None):
    """Popen with output to `log`, in its own process group; killed (that group) if still running."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def report(record_property, **timings) -> None:
    for k, v in timings.items():
        record_property(k, v)
    print(f"\ntimings: {timings}")


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------
def slow_reference_run(wd: Path) -> Path:
    """train of SLOW_MLP's mlp, uninterrupted, locally: what a resumed run must reproduce."""
    t0 = time.monotonic()
    ok(run_local(make_workdir(wd, SLOW_MLP), "results/mlp/history.csv"), "uninterrupted train of mlp")
    print(f"\nuninterrupted SLOW_MLP train of mlp: {time.monotonic() - t0:.1f} s")
    return wd


def bad_layer_keep_going(wd: Path) -> tuple[Path, subprocess.CompletedProcess, float]:
    """BAD_LAYER with --keep-going, locally, to results/spectra.csv (every view's tables)."""
    t0 = time.monotonic()
    p = run_local(make_workdir(wd, BAD_LAYER), "--keep-going", *BAD_LAYER_TARGETS)
    return wd, p, round(time.monotonic() - t0, 1)


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """The local runs the fault tests read, started in threads: beside the SLURM runs when those run
    (tiny_on_slurm asks for them first), so that the fault tests, which come after, find them done."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "slow_reference": pool.submit(slow_reference_run, tmp_path_factory.mktemp("slow_reference")),
            "bad_layer": pool.submit(bad_layer_keep_going, tmp_path_factory.mktemp("bad_layer")),
        }


@pytest.fixture(scope="module")
def slow_reference(local_runs):
    return local_runs["slow_reference"].result()


@pytest.fixture(scope="module")
def bad_layer_run(local_runs):
    return local_runs["bad_layer"].result()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    available, why = slurm_cluster.slurm_available()
    if not available:
        pytest.skip(f"local SLURM not available: {why}")
    base = tmp_path_factory.mktemp("slurm")
    with slurm_cluster.local_slurm(
        base, time_limit=CLUSTER_TIME_LIMIT, partition=PARTITION, default_partition=DECOY_PARTITION, cpus=NODE_CPUS
    ) as c:
        print(f"\ncluster up: {c.timings}")
        yield c
    print(f"\ncluster down: {c.timings}")
    # teardown left nothing of ours running
    assert all(not slurm_cluster._alive(pid) for pid in c.pids.values()), c.pids
    assert slurm_cluster._stepd_pids(c.rundir) == []


def gpu_run(cluster, wd: Path) -> tuple[Path, subprocess.CompletedProcess, float]:
    """CLUSTER_TINY with device: cuda through SLURM to the train job of a (its first job: no other job
    has to run before it), without retries."""
    make_workdir(wd, merged(CLUSTER_TINY, {"device": "cuda"}))
    t0 = time.monotonic()
    p = run_slurm(cluster, wd, "--retries", "0", "results/a/checkpoints.pt", cap=180)
    return wd, p, round(time.monotonic() - t0, 1)


def scancel_run(cluster, tmp: Path) -> dict:
    """SLOW_MLP through SLURM: `scancel` of its running train once two checkpoints are saved, then the
    rerun. What the test checks is taken when it holds: the first run's return code and output, the
    cancelled job and its state, what it left behind, then the rerun."""
    wd = make_workdir(tmp / "wf", SLOW_MLP)
    log = tmp / "first.log"
    t0 = time.monotonic()
    # --retries 0: the profile's retries: 1 would resubmit the cancelled job (which then resumes)
    cmd = snakemake_cmd(wd, *slurm_args("--retries", "0", "results/mlp/history.csv"))
    with background_snakemake(cmd, log, wd, env=cluster.environ()) as proc:

        def running_job():
            running = [j for j in slurm_jobs(cluster, wd) if j["state"] == "RUNNING"]
            return running[0] if running and len(side_checkpoints(wd)) >= 2 else None

        job = wait_until(
            running_job, cluster.remaining(120), "train of mlp running with two checkpoints", proc, log, interval=0.25
        )
        cluster.run(["scancel", job["jobid"]])
        t_cancel = time.monotonic()
        rc = proc.wait(timeout=cluster.remaining(120))
        detect_s = round(time.monotonic() - t_cancel, 1)
    first = {
        "rc": rc,
        "output": log.read_text(),
        "job": job,
        "state": {j["jobid"]: j["state"] for j in slurm_jobs(cluster, wd)}[job["jobid"]],
        "side_checkpoints": len(side_checkpoints(wd)),
        "declared_outputs": declared_mlp_outputs(wd),
    }
    t1 = time.monotonic()
    rerun = run_slurm(cluster, wd, "results/mlp/history.csv", cap=300)
    timings = {
        "scancel_first_run_s": round(t_cancel - t0, 1),
        "scancel_detect_s": detect_s,
        "scancel_rerun_s": round(time.monotonic() - t1, 1),
    }
    return {"workdir": wd, "first": first, "rerun": rerun, "timings": timings}


@pytest.fixture(scope="module")
def side_runs(cluster, tmp_path_factory):
    """The GPU request and the scancel scenario, started in threads as soon as the cluster is up. Both
    mostly wait for the plugin's status polls (it backs off by 10 s after each poll in which no job
    finished), so run beside the tiny run they take its wall time instead of adding their own. Each is a
    future; its test takes the result (or the failure) from it."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "gpu": pool.submit(gpu_run, cluster, tmp_path_factory.mktemp("gpu")),
            "scancel": pool.submit(scancel_run, cluster, tmp_path_factory.mktemp("scancel")),
        }


@pytest.fixture(scope="module")
def tiny_on_slurm(cluster, side_runs, local_runs, tmp_path_factory):
    """CLUSTER_TINY to the claims table through SLURM and, at the same time (the SLURM run mostly waits
    for status polls), locally as the reference; the side runs and the local runs go on meanwhile.
    Figures are left out: they are localrules."""
    local = make_workdir(tmp_path_factory.mktemp("tiny_local"), CLUSTER_TINY)
    slurm = make_workdir(tmp_path_factory.mktemp("tiny_slurm"), CLUSTER_TINY)
    log = local / "snakemake.log"
    t0 = time.monotonic()
    with background_snakemake(snakemake_cmd(local, "--cores", "2", "results/claims.csv"), log, local) as proc:
        p = run_slurm(cluster, slurm, "--slurm-keep-successful-logs", "results/claims.csv", cap=600)
        slurm_s = round(time.monotonic() - t0, 1)
        rc = proc.wait(timeout=cluster.remaining(LOCAL_TIMEOUT))
        local_s = round(time.monotonic() - t0, 1)
    ok(p, "TINY run through SLURM", cluster)
    if rc != 0:
        pytest.fail(f"local TINY run failed (rc={rc}):\n{log.read_text()[-6000:]}")
    return local, slurm, p, {"tiny_slurm_s": slurm_s, "tiny_local_s (concurrently)": local_s}


# ----------------------------------------------------------------------------------------------
# the profile (dry runs, no SLURM needed)
# ----------------------------------------------------------------------------------------------
def test_every_profile_entry_is_commented():
    for line in (PROFILE / "config.yaml").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"profiles/slurm/config.yaml: entry without a comment: {line!r}"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_dry_run_carries_slurm_resources(device, tmp_path):
    """What the plugin will turn into sbatch options, job by job. A real `device: cuda` run is
    impossible without a GPU (resolve_device raises), so the GPU request is checked here, in the
    dry run, and through sbatch by test_gpu_request_reaches_sbatch."""
    wd = make_workdir(tmp_path, config_with(device=device))
    p = subprocess.run(
        snakemake_cmd(wd, *slurm_args("-n", "results/claims.csv")), cwd=wd, capture_output=True, text=True, timeout=120
    )
    ok(p, "dry run with the SLURM profile")
    jobs = dry_run_jobs(p.stdout + p.stderr)
    rules = {rule for rule, _ in jobs}
    assert GPU_RULES | {"analyse", "claims_tms", "smooth_rotation", "claims_modadd", "claims"} <= rules, rules
    assert {rule for rule, _ in jobs if rule in GPU_RULES} == GPU_RULES
    for rule, res in jobs:
        assert res.get("slurm_partition") == PARTITION, (rule, res)  # sbatch -p
        assert res.get("cpus_per_task") == "1", (rule, res)  # = threads: 1 of every rule
        assert int(res["mem_mb"]) >= 500 and int(res["runtime"]) >= 2, (rule, res)  # the rule's own
        want_gpu = ("1" if device == "cuda" else "0") if rule in GPU_RULES else None
        assert res.get("gpu") == want_gpu, (rule, res)  # gpu=1 -> sbatch --gpus=1


# ----------------------------------------------------------------------------------------------
# through SLURM
# ----------------------------------------------------------------------------------------------
@pytest.mark.cluster
@pytest.mark.slow
def test_tiny_workflow_on_slurm_matches_local_run(tiny_on_slurm, record_property):
    local, slurm, _, timings = tiny_on_slurm
    report(record_property, **timings)
    for table in (
        "claims.csv",
        "paper/tms_metrics.csv",
        "paper/overlap_curve.csv",
        "mlp/history.csv",
        "mlp/diag/spectra.csv",
        "mlp/diag/phases.csv",
    ):
        assert (slurm / "results" / table).read_bytes() == (local / "results" / table).read_bytes(), table


@pytest.mark.cluster
@pytest.mark.slow
def test_tiny_jobs_went_through_sbatch_with_profile_resources(cluster, tiny_on_slurm):
    _, slurm, p, _ = tiny_on_slurm
    jobs = slurm_jobs(cluster, slurm)
    counts: dict[str, int] = {}
    for j in jobs:
        counts[rule_of(j["comment"])] = counts.get(rule_of(j["comment"]), 0) + 1
    assert counts == CLUSTER_TINY_JOBS, counts
    assert not LOCAL_RULES & set(counts)  # localrules ran on the submit host
    assert {j["state"] for j in jobs} == {"COMPLETED"}, jobs
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output_of(p))
    assert sorted(submitted) == sorted(j["jobid"] for j in jobs), (submitted, jobs)

    # the resources slurmctld recorded: the profile's partition, the rules' mem_mb and runtime
    # (eigen: 1500 MB per GB of the default 4 GB budget, rules/common.smk eigen_mem_mb)
    want = {"train": ("4000M", "01:00:00"), "eigen": ("6000M", "01:00:00")}
    seen = set()
    for j in jobs:
        rule = rule_of(j["comment"])
        info = cluster.show_job(j["jobid"])
        assert info["Partition"] == PARTITION, info  # only via -p: the default is a decoy
        assert info["NumCPUs"] == "1", info  # cpus_per_task = threads = 1
        assert "gpu" not in info.get("TresPerJob", ""), info  # device: cpu -> gpu=0 -> no --gpus
        assert (info["MinMemoryNode"], info["TimeLimit"]) == want[rule], (rule, info)
        seen.add(rule)
    assert seen == set(want)

    # one SLURM log per job (kept with --slurm-keep-successful-logs)
    logs = list((slurm / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert sorted(f.stem for f in logs) == sorted(j["jobid"] for j in jobs), logs


# ----------------------------------------------------------------------------------------------
# faults without SLURM
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bad_input_error_in_rule_log_and_output(bad_layer_run, record_property):
    wd, p, seconds = bad_layer_run
    report(record_property, bad_layer_keep_going_s=seconds)
    assert p.returncode != 0, output_of(p)[-3000:]
    out = output_of(p)
    # The train job checks every view before training (entk.pipeline.preflight): the bad view stops it there.
    assert "Error in rule train" in out, out[-3000:]
    assert BAD_LAYER_ERROR in out and "'experiments.a.views.bad.output_weights'" in out, out[-3000:]
    log = (wd / "logs/a/train.log").read_text()
    assert BAD_LAYER_ERROR in log and "ValueError" in log, log
    assert "TMS a:" not in log, log  # the recipe never started
    assert not (wd / "results/a/checkpoints.pt").exists()


@pytest.mark.slow
def test_keep_going_finishes_independent_branches(bad_layer_run):
    wd, p, _ = bad_layer_run
    out = output_of(p)
    # the MLP branch is complete ...
    for rel in (
        "results/mlp/checkpoints.pt",
        "results/mlp/history.csv",
        "results/mlp/diag/eigen.npz",
        "results/mlp/diag/spectra.csv",
    ):
        assert (wd / rel).stat().st_size > 0, f"{rel} missing\n{out[-3000:]}"
    # ... only what depends on the experiment with the bad view is missing
    for rel in ("results/a/checkpoints.pt", "results/a/plain/eigen.npz", "results/spectra.csv"):
        assert not (wd / rel).exists(), rel
    # every job ran but the 6 behind a's refused training: train (a), eigen and analyse of its two
    # views, spectra_table
    done, total = map(int, re.findall(r"(\d+) of (\d+) steps", out)[-1])
    assert done == total - 6, out[-3000:]
    assert "Exiting because a job execution failed" in out, out[-3000:]


@pytest.mark.slow
def test_kill9_of_local_train_then_rerun_resumes(slow_reference, tmp_path, record_property):
    wd = make_workdir(tmp_path / "wf", SLOW_MLP)
    log = tmp_path / "first.log"
    t0 = time.monotonic()
    with background_snakemake(snakemake_cmd(wd, "--cores", "2", "results/mlp/history.csv"), log, wd) as proc:
        # the python running scripts/train.py: Snakemake runs a copy of it,
        # `python .snakemake/scripts/tmpXXXX.train.py`, as its child process
        def trainer():
            for pid in descendants(proc.pid):
                args = argv(pid)
                if (
                    args
                    and Path(args[0]).name.startswith("python")
                    and any(Path(a).name.endswith(".train.py") for a in args[1:])
                ):
                    return pid
            return None

        child = wait_until(trainer, 60, "the train process", proc, log)
        # mid-run: past the first checkpoint after epoch 0, long before the last one
        wait_until(lambda: len(side_checkpoints(wd)) >= 2, 60, "two checkpoints", proc, log)
        killed_at = len(side_checkpoints(wd))
        os.kill(child, signal.SIGKILL)
        rc = proc.wait(timeout=120)
    first_s = round(time.monotonic() - t0, 1)
    text = log.read_text()
    assert rc != 0, text[-3000:]
    assert "Error in rule train" in text, text[-3000:]
    assert killed_at < len(SLOW_EPOCHS), "training finished before the kill; make SLOW_MLP slower"
    # Snakemake removed the killed job's declared outputs; only the side folder is left
    assert declared_mlp_outputs(wd) == [], declared_mlp_outputs(wd)
    assert len(side_checkpoints(wd)) >= 2

    t1 = time.monotonic()
    p = run_local(wd, "results/mlp/history.csv")
    report(
        record_property,
        kill9_first_run_s=first_s,
        kill9_rerun_s=round(time.monotonic() - t1, 1),
        kill9_checkpoints_before_kill=killed_at,
    )
    ok(p, "rerun after kill -9")
    epoch = resumed_epoch(wd)
    assert epoch is not None and epoch >= SLOW_EPOCHS[1], (wd / "logs/mlp/train.log").read_text()[:2000]
    assert side_checkpoints(wd) == []  # side folder dropped once every output is in place
    assert_same_final_checkpoint(wd, slow_reference)


# ----------------------------------------------------------------------------------------------
# through SLURM, last: the GPU and scancel runs go on in their threads while the local faults run
# ----------------------------------------------------------------------------------------------
@pytest.mark.cluster
@pytest.mark.slow
def test_gpu_request_reaches_sbatch(cluster, side_runs, record_property):
    """device: cuda -> the train job is submitted with --gpus=1 (the harness has a fake GPU, so SLURM
    schedules it); inside, resolve_device finds no CUDA and the job fails with a clear message."""
    wd, p, seconds = side_runs["gpu"].result()
    report(record_property, gpu_job_s=seconds)
    out = output_of(p)
    assert p.returncode != 0, out[-3000:]
    jobs = slurm_jobs(cluster, wd)
    assert [rule_of(j["comment"]) for j in jobs] == ["train"], jobs
    info = cluster.show_job(jobs[0]["jobid"])
    assert info.get("TresPerJob") == "gres:gpu:1", info  # gpu=1 -> sbatch --gpus=1
    assert info["Partition"] == PARTITION and jobs[0]["state"] == "FAILED", (info, jobs)
    msg = "no CUDA GPU is visible"
    assert msg in (wd / "logs/a/train.log").read_text()
    assert msg in out, out[-3000:]


@pytest.mark.cluster
@pytest.mark.slow
def test_scancel_of_train_then_rerun_resumes(cluster, side_runs, slow_reference, record_property):
    run = side_runs["scancel"].result()
    wd, first, p = run["workdir"], run["first"], run["rerun"]
    report(record_property, **run["timings"])
    text = first["output"]
    assert rule_of(first["job"]["comment"]) == "train", first["job"]
    assert first["rc"] != 0, text[-3000:]
    assert "Error in rule train" in text and "CANCELLED" in text, text[-3000:]
    assert first["state"] == "CANCELLED", first
    assert first["side_checkpoints"] < len(SLOW_EPOCHS), "training finished before scancel"
    assert first["declared_outputs"] == [], first["declared_outputs"]

    ok(p, "rerun after scancel", cluster)
    assert (resumed_epoch(wd) or 0) >= SLOW_EPOCHS[1], (wd / "logs/mlp/train.log").read_text()[:2000]
    assert_same_final_checkpoint(wd, slow_reference)
