"""End-to-end: the demo workflow through `snakemake --executor slurm` on a
throw-away single-node SLURM (see slurm_cluster.py).

Skipped (with the reason) unless running as root on a machine where the Debian
packages slurmctld/slurmd/slurm-client/munge are installed or installable.
Run with `-s` to see the timings, e.g.

    .venv/bin/python -m pytest tests/cluster -m cluster -s
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slurm_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
DEMO = HERE / "demo"
PROFILE = DEMO / "profile"
# per test (cluster start + snakemake runs); a hang raises SlurmTimeout
TIME_LIMIT = 150


@pytest.fixture(scope="module")
def slurm_ready():
    ok, why = slurm_cluster.slurm_available()
    if not ok:
        pytest.skip(f"local SLURM not available: {why}")
    return why


@pytest.fixture
def cluster(slurm_ready, tmp_path):
    with slurm_cluster.local_slurm(tmp_path / "cluster", time_limit=TIME_LIMIT) as c:
        yield c
    # teardown left nothing of ours running
    assert all(not _pid_alive(pid) for pid in c.pids.values()), c.pids
    assert slurm_cluster._stepd_pids(c.rundir) == []


@pytest.fixture
def workdir(tmp_path):
    wd = tmp_path / "wf"
    wd.mkdir()
    shutil.copy(DEMO / "Snakefile", wd / "Snakefile")
    return wd


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--profile", str(PROFILE), "--snakefile", "Snakefile", *args]


def run_snakemake(cluster, workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(*args), cwd=workdir, env=cluster.environ(), capture_output=True,
                          text=True, timeout=cluster.remaining(timeout))


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def report(record_property, cluster, **extra):
    timings = {**cluster.timings, **extra}
    for k, v in timings.items():
        record_property(k, v)
    print(f"\ntimings: {timings}")


def test_demo_workflow(cluster, workdir, record_property):
    t0 = time.monotonic()
    p = run_snakemake(cluster, workdir)
    run_s = round(time.monotonic() - t0, 1)
    report(record_property, cluster, demo_run_s=run_s)
    assert p.returncode == 0, f"snakemake failed:\n{p.stderr[-5000:]}\n{cluster.log_tail()}"

    res = workdir / "results"
    envs = {name: read_env_file(res / f"{name}.txt") for name in ("prepare", "gpu", "gres")}
    # every rule ran as its own SLURM job, in the default partition
    ids = [e.get("SLURM_JOB_ID") for e in envs.values()]
    assert all(ids) and len(set(ids)) == 3, envs
    assert all(e.get("SLURM_JOB_PARTITION") == cluster.partition for e in envs.values()), envs
    # the fake GPU (gres.conf File=/dev/null) is handed to both GPU jobs, not to the CPU job
    assert envs["gpu"].get("CUDA_VISIBLE_DEVICES") == "0", envs["gpu"]
    assert envs["gres"].get("CUDA_VISIBLE_DEVICES") == "0", envs["gres"]
    assert "CUDA_VISIBLE_DEVICES" not in envs["prepare"], envs["prepare"]

    # how the resources reached sbatch, as slurmctld recorded them (MinJobAge=300
    # keeps finished jobs visible)
    jobs = {j["comment"]: j for j in cluster.squeue()}
    assert {"rule_prepare", "rule_on_gpu", "rule_on_gres"} <= set(jobs), jobs
    assert all(jobs[r]["state"] == "COMPLETED" for r in ("rule_prepare", "rule_on_gpu", "rule_on_gres")), jobs
    prep = cluster.show_job(jobs["rule_prepare"]["jobid"])
    gpu = cluster.show_job(jobs["rule_on_gpu"]["jobid"])
    gres = cluster.show_job(jobs["rule_on_gres"]["jobid"])
    assert prep["MinMemoryNode"] == "300M" and prep["TimeLimit"] == "00:03:00", prep   # mem_mb=300, runtime=3
    assert gpu.get("TresPerJob") == "gres:gpu:1", gpu      # gpu=1       -> --gpus=1
    assert gres.get("TresPerNode") == "gres:gpu:1", gres   # gres=gpu:1  -> --gres=gpu:1
    assert gpu["MinMemoryNode"] == "200M", gpu


def test_scancel_then_rerun(cluster, workdir, record_property):
    out = workdir / "results" / "sleep.txt"
    log = workdir / "snakemake-first.log"
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(snakemake_cmd("results/sleep.txt", "--config", "sleep=300"), cwd=workdir,
                                env=cluster.environ(), stdout=fh, stderr=subprocess.STDOUT)
    try:
        # wait until the sleeper runs and has written its partial output
        deadline = time.monotonic() + cluster.remaining(60)
        job = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            running = [j for j in cluster.squeue() if j["comment"] == "rule_sleeper" and j["state"] == "RUNNING"]
            if running and out.exists() and out.read_text().startswith("started"):
                job = running[0]
                break
            time.sleep(0.5)
        assert job is not None, f"sleeper never ran\n{log.read_text()[-3000:]}\n{cluster.log_tail()}"

        cluster.run(["scancel", job["jobid"]])
        t_cancel = time.monotonic()
        rc = proc.wait(timeout=cluster.remaining(90))
        detect_s = round(time.monotonic() - t_cancel, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert rc != 0, text[-3000:]
    assert "Error in rule sleeper" in text and "CANCELLED" in text, text[-3000:]
    assert not out.exists(), f"partial output left behind: {out.read_text()!r}"
    assert {j["jobid"]: j["state"] for j in cluster.squeue()}[job["jobid"]] == "CANCELLED"

    # the rerun starts from scratch and completes
    t1 = time.monotonic()
    p = run_snakemake(cluster, workdir, "results/sleep.txt", "--config", "sleep=1")
    rerun_s = round(time.monotonic() - t1, 1)
    report(record_property, cluster, cancel_detect_s=detect_s, cancel_test_first_run_s=round(t1 - t0, 1),
           rerun_s=rerun_s)
    assert p.returncode == 0, f"rerun failed:\n{p.stderr[-5000:]}"
    lines = out.read_text().splitlines()
    assert lines[0].startswith("started") and lines[-1] == "finished", lines


def test_time_limit_raises_and_cleans_up(slurm_ready, tmp_path):
    """A hang inside the block raises SlurmTimeout and the daemons still get stopped."""
    t0 = time.monotonic()
    with pytest.raises(slurm_cluster.SlurmTimeout):
        with slurm_cluster.local_slurm(tmp_path / "cluster", time_limit=5) as c:
            c.run(["sbatch", "--parsable", "--wrap", "sleep 300"])
            subprocess.run(["sleep", "60"])  # the "hang"
    assert time.monotonic() - t0 < 30
    assert all(not _pid_alive(pid) for pid in c.pids.values()), c.pids
    assert slurm_cluster._stepd_pids(c.rundir) == []
