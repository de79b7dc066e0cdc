"""The harness itself (slurm_cluster.py): a hang inside `local_slurm` fails after its time limit
and still stops everything it started. Marked `cluster` and `slow`; skipped with the reason unless
root and the Debian packages are installed or installable."""

from __future__ import annotations

import subprocess
import time

import pytest
import slurm_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_time_limit_raises_and_cleans_up(tmp_path):
    available, why = slurm_cluster.slurm_available()
    if not available:
        pytest.skip(f"local SLURM not available: {why}")
    t0 = time.monotonic()
    with pytest.raises(slurm_cluster.SlurmTimeout):
        # 5 s: the cluster is up in 1-2 s and the job submitted, so the limit strikes during the hang
        with slurm_cluster.local_slurm(tmp_path / "cluster", time_limit=5) as c:
            c.run(["sbatch", "--parsable", "--output=/dev/null", "--wrap", "sleep 300"], cwd=tmp_path)
            subprocess.run(["sleep", "60"])  # the "hang"
    assert time.monotonic() - t0 < 40
    assert all(not slurm_cluster._alive(pid) for pid in c.pids.values()), c.pids
    assert slurm_cluster._stepd_pids(c.rundir) == []
