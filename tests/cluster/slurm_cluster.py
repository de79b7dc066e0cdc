"""A throw-away single-node SLURM cluster on localhost, for testing Snakemake's
``--executor slurm`` end to end.

Usage::

    ok, why = slurm_available()          # installs the Debian packages if needed
    if not ok:
        pytest.skip(why)
    with local_slurm(tmp_path) as cluster:
        subprocess.run([...snakemake...], env=cluster.environ(), timeout=cluster.remaining())

What it does
------------
* ``slurm_available()``: must be root (slurmd has to run as root to launch job
  steps); installs ``slurmctld slurmd slurm-client munge`` with
  ``apt-get install -y --no-install-recommends`` (after ``apt-get update``) when a
  binary is missing. Returns ``(False, reason)`` instead of raising, so callers can
  skip. The result (and the apt timings) are cached for the process.
* ``local_slurm(workdir)``: writes a private ``slurm.conf``/``gres.conf``/
  ``plugstack.conf``, a private munge key and socket, starts ``munged``,
  ``slurmctld`` and ``slurmd`` in the foreground mode of each daemon (so the PID of
  the ``Popen`` is the daemon's PID), waits until ``sinfo`` reports the node
  ``idle``, yields a :class:`SlurmCluster`, and in ``finally`` cancels leftover
  jobs and stops every daemon by PID (SIGTERM, then SIGKILL).

Nothing under /etc is written by the harness. Clients and daemons find the
configuration through ``SLURM_CONF`` (exported in ``cluster.env``); the munge
socket is named in slurm.conf (``AuthInfo=socket=...``) so the system munge
(``/etc/munge/munge.key``, ``/run/munge``) is neither needed nor touched. The only
changes to the system are those made by apt itself (packages, the ``munge`` and
``slurm`` users, ``/etc/munge/munge.key`` created by munge's postinst, systemd unit
symlinks). Debian's postinst scripts try ``invoke-rc.d ... start``; in containers
``/usr/sbin/policy-rc.d`` usually denies that, on a host without it the system
munged may get started by apt (harmless: we use our own socket).

Time limits: every wait has a deadline; ``local_slurm(time_limit=...)`` arms an
overall limit for the whole ``with`` block. In the main thread it is a SIGALRM
that raises :class:`SlurmTimeout` (a ``TimeoutError``) wherever the block is
blocked, including inside ``subprocess.run``; off the main thread a watchdog
thread stops the daemons instead, so blocked SLURM clients fail rather than hang.
``cluster.remaining()`` gives the seconds left, to be used as ``timeout=`` for
subprocesses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# binaries the harness needs; a missing one triggers the apt install
BINARIES = ("slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel", "scontrol", "srun", "munged", "mungekey")
PARTITION = "debug"
CLUSTER_NAME = "snaketest"

# apt timings of this process (seconds), filled by ensure_slurm_installed()
INSTALL_TIMINGS: dict[str, float] = {}

# ----------------------------------------------------------------------------
# Configuration templates
# ----------------------------------------------------------------------------
# Notes on the choices (Debian bookworm ships slurm-wlm 22.05.8):
# * SlurmUser/SlurmdUser=root: everything runs as root, no chown dance with the
#   `slurm` user; jobs run as the submitting user (root here).
# * No cgroups: proctrack/linuxproc tracks job processes via /proc parent links,
#   task/none does no binding/confinement, so no cgroup.conf and no cgroupfs are
#   needed (works inside containers / gVisor).
# * No accounting: accounting_storage/none + jobacct_gather/none + jobcomp/none;
#   consequently `sacct` fails with "Slurm accounting storage is disabled" and
#   `sacctmgr` with "Only 'accounting_storage/slurmdbd' is supported" -> the
#   Snakemake plugin must use squeue for status (see demo/profile/config.yaml).
# * No AccountingStorageTRES=gres/gpu: slurmctld 22.05 refuses to start with it
#   ("slurmdbd is required to run with TRES gres/gpu"), so job TRES strings
#   never mention the GPU; check TresPerJob/TresPerNode instead.
# * MinJobAge=300: finished jobs stay visible to `squeue --states=all` for 5 min.
#   The plugin (2.8.0) silently falls back from squeue to sacct when
#   MinJobAge < 3 * slurm-init-seconds-before-status-checks and the sacct
#   binary exists (it does: slurm-client ships it), so keep this large.
# * select/cons_tres is required for `--gpus=N` (what the plugin emits for the
#   `gpu` resource); `--gres=gpu:N` works with it too. CR_Core_Memory makes
#   `--mem` a consumable so mem_mb requests are enforced by the scheduler;
#   DefMemPerCPU keeps memory-less jobs from grabbing the whole node.
# * GresTypes=gpu + node `Gres=gpu:1` + gres.conf `File=/dev/null`: a fake GPU
#   so GPU jobs are schedulable (CUDA_VISIBLE_DEVICES=0 is set for them).
# * cpus=N (local_slurm): the node advertises N cores instead of what slurmd
#   detects; SlurmdParameters=config_overrides keeps slurmd from draining it
#   for "Low CPUs". Lets more 1-core jobs run side by side than there are cores.
# * KillWait=5: scancel -> SIGTERM, SIGKILL after 5 s (default 30 s).
# * MailProg=/bin/true silences "Configured MailProg is invalid".
# * PlugStackConfig: the default would be dirname(SLURM_CONF)/plugstack.conf;
#   we write an empty one so /etc/slurm/plugstack.conf(.d) is not read.
SLURM_CONF_TEMPLATE = """\
# generated by tests/cluster/slurm_cluster.py -- single node, no cgroups, no accounting
ClusterName={cluster_name}
SlurmctldHost={nodename}({addr})
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={rundir}/state
SlurmdSpoolDir={rundir}/spool
SlurmctldPidFile={rundir}/slurmctld.pid
SlurmdPidFile={rundir}/slurmd.pid
SlurmctldLogFile={logdir}/slurmctld.log
SlurmdLogFile={logdir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={etcdir}/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
GresTypes=gpu
MinJobAge=300
{slurmd_parameters}KillWait=5
InactiveLimit=0
ReturnToService=2
NodeName={nodename} NodeAddr={addr} {hardware} RealMemory={real_memory} {gres}State=UNKNOWN
{partitions}"""

# File=/dev/null: a device file is needed for a counted GRES; /dev/null is a
# harmless stand-in. AutoDetect=off: no NVML/RSMI probing. More than one fake
# GPU takes one line per further harmless character device.
GRES_CONF_TEMPLATE = """\
AutoDetect=off
{lines}"""
FAKE_GPU_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")


# Client wrappers put first on PATH (cluster.env["PATH"]). Needed because
# snakemake-executor-plugin-slurm-jobstep (0.6.1) runs the rule inside the job via
# `srun -n1 --cpu-bind=q ...` with an environment from which it removes every
# SLURM_* variable except the job identity ones -- SLURM_CONF included. That
# srun then looks for /etc/slurm/slurm.conf, then /run/slurm/conf (configless
# slurmd), then DNS SRV records, and dies with "Could not establish a
# configuration source". The wrapper restores SLURM_CONF when it is unset.
CLIENT_WRAPPERS = ("srun", "sbatch", "salloc", "squeue", "scancel", "scontrol", "sinfo")
WRAPPER_TEMPLATE = """\
#!/bin/sh
# generated by tests/cluster/slurm_cluster.py: default SLURM_CONF for {tool}
: "${{SLURM_CONF:={conf}}}"
export SLURM_CONF
exec {real} "$@"
"""


class SlurmUnavailable(RuntimeError):
    pass


class SlurmTimeout(TimeoutError):
    pass


# ----------------------------------------------------------------------------
# Availability / installation
# ----------------------------------------------------------------------------
_AVAILABLE: tuple[bool, str] | None = None


def _missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def ensure_slurm_installed(timeout: float = 240.0) -> tuple[bool, str]:
    """apt-get update + install PACKAGES when a binary is missing."""
    missing = _missing_binaries()
    if not missing:
        return True, "slurm and munge already installed"
    if os.environ.get("SLURM_TEST_NO_INSTALL", "") not in ("", "0"):
        return False, f"SLURM binaries missing ({', '.join(missing)}) and SLURM_TEST_NO_INSTALL is set"
    if shutil.which("apt-get") is None:
        return False, f"SLURM binaries missing ({', '.join(missing)}) and no apt-get to install them"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + timeout
    steps = [
        # Lock::Timeout: wait for a concurrent apt/dpkg instead of failing at once
        ("apt_update_s", ["apt-get", "-o", "DPkg::Lock::Timeout=60", "update", "-q"]),
        (
            "apt_install_s",
            ["apt-get", "-o", "DPkg::Lock::Timeout=60", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        ),
    ]
    for key, cmd in steps:
        t0 = time.monotonic()
        try:
            p = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic())
            )
        except subprocess.TimeoutExpired:
            return False, f"`{' '.join(cmd)}` timed out after {timeout:.0f} s"
        except OSError as e:
            return False, f"`{' '.join(cmd)}` could not run: {e}"
        INSTALL_TIMINGS[key] = round(time.monotonic() - t0, 2)
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
            return False, f"`{' '.join(cmd)}` failed (rc={p.returncode}): " + " | ".join(tail)
    missing = _missing_binaries()
    if missing:
        return False, f"apt install finished but binaries still missing: {', '.join(missing)}"
    return True, f"installed {' '.join(PACKAGES)} in {INSTALL_TIMINGS.get('apt_install_s', 0):.1f} s"


def slurm_available(install: bool = True) -> tuple[bool, str]:
    """(True, info) when a local SLURM can be started here, else (False, reason).

    Needs root: slurmd must run as root, and the packages are installed with apt.
    """
    global _AVAILABLE
    if _AVAILABLE is not None:
        return _AVAILABLE
    if os.name != "posix" or not hasattr(os, "geteuid"):
        result = (False, "local SLURM needs Linux")
    elif os.geteuid() != 0:
        result = (False, "local SLURM needs root (slurmd runs as root; packages come from apt)")
    elif install:
        result = ensure_slurm_installed()
    else:
        missing = _missing_binaries()
        result = (not missing, "ok" if not missing else f"missing: {', '.join(missing)}")
    _AVAILABLE = result
    return result


# ----------------------------------------------------------------------------
# The cluster
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class SlurmCluster:
    rundir: Path  # state, spool, sockets, pid files
    etcdir: Path  # slurm.conf, gres.conf, plugstack.conf
    logdir: Path  # daemon logs (copied to workdir/slurm-logs at teardown)
    conf: Path  # slurm.conf
    nodename: str
    partition: str
    env: dict[str, str]  # variables to add to a client's environment (SLURM_CONF)
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    deadline: float = float("inf")  # time.monotonic() value

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ plus the cluster variables (for subprocess env=)."""
        env = dict(os.environ)
        # a surrounding real SLURM job must not leak into the test cluster
        for k in list(env):
            if k.startswith("SLURM_") and k != "SLURM_CONF":
                del env[k]
        env.update(self.env)
        env.update(extra)
        return env

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left before the time limit (at most `cap`); raises once it passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise SlurmTimeout("local_slurm: time limit exceeded")
        return min(left, cap) if cap else left

    def run(self, cmd, timeout: float | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """subprocess.run with the cluster env and a timeout bounded by the deadline."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(
            cmd, env=kw.pop("env", None) or self.environ(), timeout=self.remaining(timeout), check=check, **kw
        )

    def squeue(self) -> list[dict[str, str]]:
        """All jobs slurmctld still knows (also finished ones, for MinJobAge): dicts with
        jobid, state, name, comment (Snakemake: rule_<rule>[_wildcards_...]), workdir."""
        out = self.run(["squeue", "--states=all", "--noheader", "--format=%i|%T|%j|%k|%Z"], timeout=20).stdout
        keys = ("jobid", "state", "name", "comment", "workdir")
        jobs = []
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == len(keys):
                jobs.append(dict(zip(keys, (p.strip() for p in parts), strict=False)))
        return jobs

    def show_job(self, jobid: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (only while slurmctld still knows the job)."""
        out = self.run(["scontrol", "show", "job", "-o", str(jobid)], timeout=20).stdout
        return dict(re.findall(r"(\S+?)=(\S*)", out))

    def log_tail(self, n: int = 40) -> str:
        chunks = []
        for f in sorted(self.logdir.glob("*")):
            try:
                lines = f.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                continue
            chunks.append(f"==> {f.name} <==\n" + "\n".join(lines))
        return "\n".join(chunks)


def _partition_lines(nodename: str, partition: str, default_partition: str | None) -> str:
    names = [partition] if default_partition in (None, partition) else [default_partition, partition]
    return "".join(
        f"PartitionName={name} Nodes={nodename} Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE State=UP\n"
        for i, name in enumerate(names)
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _detect_hardware() -> tuple[str, int]:
    """Node line fields as slurmd sees this machine (`slurmd -C`), and RealMemory.

    slurmd drains the node when the configured CPUs/memory exceed what it
    detects, so take slurmd's own view and stay 5 % below its memory figure.
    """
    try:
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0] if out else ""))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    if all(k in fields for k in keys) and "RealMemory" in fields:
        hardware = " ".join(f"{k}={fields[k]}" for k in keys)
        mem = int(fields["RealMemory"])
    else:
        hardware = f"CPUs={os.cpu_count() or 1}"
        mem = 1024
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) // 1024
    return hardware, max(256, int(mem * 0.95))


def _stop_pid(pid: int, grace: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM, wait up to `grace`, then SIGKILL. Only the given PID.

    `proc`: the Popen of that PID when it is our child (then it is reaped too).
    """
    alive = (lambda: proc.poll() is None) if proc is not None else (lambda: _alive(pid))
    if not alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if not alive():
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _alive(pid: int) -> bool:
    """For PIDs that are not our children."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie that is not our child still answers kill(0); check /proc
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _proc_table() -> dict[int, int]:
    """pid -> ppid for every visible process."""
    table = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                table[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return table


def _stepd_pids(rundir: Path) -> list[int]:
    """slurmstepd processes of *our* slurmd, plus all their descendants (the jobs).

    slurmstepd is forked by slurmd and daemonizes (ppid 1), and it wipes its
    environment, so an env marker does not work; but it inherits slurmd's cwd
    (our rundir) and keeps the slurmd log file (in our rundir) open.
    """
    root = str(rundir)
    table = _proc_table()
    stepds = []
    for pid in table:
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"slurmstepd"):
                continue
            cwd = os.readlink(f"/proc/{pid}/cwd")
            fds = []
            with contextlib.suppress(OSError):
                fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            if cwd == root or cwd.startswith(root + "/") or any(f.startswith(root + "/") for f in fds):
                stepds.append(pid)
    # descendants, breadth first (children listed after their parents)
    result, frontier = list(stepds), list(stepds)
    while frontier:
        frontier = [c for c, pp in table.items() if pp in frontier and c not in result]
        result.extend(frontier)
    return result


def _wait_for(predicate, deadline: float, what: str, interval: float = 0.25):
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except SlurmUnavailable:
            raise  # a daemon died: no point in waiting
        except Exception as e:  # noqa: BLE001 -- retried until the deadline
            last_exc = e
        time.sleep(interval)
    raise SlurmTimeout(f"timed out waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


@contextlib.contextmanager
def local_slurm(
    workdir: os.PathLike | str,
    time_limit: float = 240.0,
    start_timeout: float = 60.0,
    gpus: int = 1,
    partition: str = PARTITION,
    default_partition: str | None = None,
    cpus: int | None = None,
) -> Iterator[SlurmCluster]:
    """Start munged + slurmctld + slurmd for one localhost node; stop them on exit.

    workdir: where configs and logs end up (``workdir/slurm``); the runtime dir
        holding unix sockets moves to a short /tmp path when workdir is long
        (sun_path is limited to 108 bytes).
    time_limit: seconds for the whole ``with`` block (startup included).
    start_timeout: seconds for the daemons to come up and the node to be idle.
    gpus: fake GPUs on the node (all backed by /dev/null).
    partition: name of the partition, e.g. to match a profile's
        `slurm_partition` default resource.
    default_partition: when given (and not `partition`), a second partition of
        the same node that is the cluster's default; jobs then land in
        `partition` only when sbatch was given ``-p <partition>``. Without it
        `partition` is the default.
    cpus: cores the node advertises (default: what `slurmd -C` detects); more
        than the machine has lets that many 1-core jobs run at once.
    """
    ok, why = slurm_available()
    if not ok:
        raise SlurmUnavailable(why)

    t_start = time.monotonic()
    deadline = t_start + time_limit
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    base = workdir / "slurm"
    # longest socket: <spool>/<node>_<jobid>.<step> ; keep plenty of headroom
    short = len(str(base)) > 60
    rundir = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp")) if short else base
    rundir.mkdir(parents=True, exist_ok=True)
    etcdir, logdir, bindir = rundir / "etc", rundir / "log", rundir / "bin"
    for d in (etcdir, logdir, bindir, rundir / "state", rundir / "spool", rundir / "munge", rundir / "munge-run"):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(rundir, 0o755)
    os.chmod(rundir / "munge", 0o700)  # key dir: munged refuses group/other-writable
    os.chmod(rundir / "munge-run", 0o755)  # socket dir: others need x to reach the socket

    nodename = socket.gethostname().split(".")[0]  # == `hostname -s`
    hardware, real_memory = _detect_hardware()
    if cpus:
        hardware = f"CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1"
    munge_socket = rundir / "munge-run" / "munge.socket"
    conf = etcdir / "slurm.conf"
    conf.write_text(
        SLURM_CONF_TEMPLATE.format(
            cluster_name=CLUSTER_NAME,
            nodename=nodename,
            addr="127.0.0.1",
            ctld_port=_free_port(),
            slurmd_port=_free_port(),
            munge_socket=munge_socket,
            rundir=rundir,
            logdir=logdir,
            etcdir=etcdir,
            hardware=hardware,
            slurmd_parameters="SlurmdParameters=config_overrides\n" if cpus else "",
            real_memory=real_memory,
            gres=f"Gres=gpu:{gpus} " if gpus else "",
            partitions=_partition_lines(nodename, partition, default_partition),
        )
    )
    if not 0 <= gpus <= len(FAKE_GPU_DEVICES):
        raise ValueError(f"gpus must be between 0 and {len(FAKE_GPU_DEVICES)}")
    (etcdir / "gres.conf").write_text(
        GRES_CONF_TEMPLATE.format(
            lines="".join(f"NodeName={nodename} Name=gpu File={dev}\n" for dev in FAKE_GPU_DEVICES[:gpus])
        )
    )
    (etcdir / "plugstack.conf").write_text("# empty: no SPANK plugins\n")
    for tool in CLIENT_WRAPPERS:
        real = shutil.which(tool)
        if real:
            w = bindir / tool
            w.write_text(WRAPPER_TEMPLATE.format(tool=tool, conf=conf, real=real))
            w.chmod(0o755)

    cluster = SlurmCluster(
        rundir=rundir,
        etcdir=etcdir,
        logdir=logdir,
        conf=conf,
        nodename=nodename,
        partition=partition,
        deadline=deadline,
        env={"SLURM_CONF": str(conf), "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"},
    )
    cluster.timings.update(INSTALL_TIMINGS)
    daemon_env = cluster.environ()
    procs: list[tuple[str, subprocess.Popen]] = []
    files = []

    def spawn(name: str, cmd: list[str]) -> subprocess.Popen:
        out = open(logdir / f"{name}.out", "wb")
        files.append(out)
        # -D/-F: stay in the foreground, so Popen.pid is the daemon itself;
        # own session: Ctrl-C on the test run does not hit the daemons directly
        p = subprocess.Popen(
            cmd,
            env=daemon_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=rundir,
        )
        procs.append((name, p))
        cluster.pids[name] = p.pid
        return p

    def check_alive():
        for name, p in procs:
            if p.poll() is not None:
                raise SlurmUnavailable(f"{name} exited with rc={p.returncode} during startup\n{cluster.log_tail()}")

    # overall limit: SIGALRM in the main thread, a watchdog otherwise
    in_main = threading.current_thread() is threading.main_thread()
    old_handler = None
    watchdog = None

    def on_alarm(signum, frame):
        raise SlurmTimeout(f"local_slurm: time limit of {time_limit:.0f} s exceeded")

    def on_watchdog():
        # blocked SLURM clients fail once the daemons are gone; cluster.remaining() raises
        for _, p in reversed(procs):
            _stop_pid(p.pid, grace=2, proc=p)

    if in_main:
        old_handler = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, time_limit)
    else:
        watchdog = threading.Timer(time_limit, on_watchdog)
        watchdog.daemon = True
        watchdog.start()

    try:
        start_deadline = min(deadline, time.monotonic() + start_timeout)
        # munge: private key (mungekey; dd of /dev/urandom as fallback) and socket
        key = rundir / "munge" / "munge.key"
        t0 = time.monotonic()
        if (
            subprocess.run(
                ["mungekey", "--create", f"--keyfile={key}", "--force"], capture_output=True, timeout=30
            ).returncode
            != 0
        ):
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={munge_socket}",
                f"--key-file={key}",
                f"--log-file={logdir / 'munged.log'}",
                f"--pid-file={rundir / 'munge-run' / 'munged.pid'}",
                f"--seed-file={rundir / 'munge' / 'munged.seed'}",
            ],
        )
        _wait_for(lambda: (check_alive(), munge_socket.exists())[1], start_deadline, "the munge socket")
        cluster.timings["munged_start_s"] = round(time.monotonic() - t0, 2)

        t0 = time.monotonic()
        # -i: ignore (nonexistent) saved state; -D: foreground
        spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)])
        spawn("slurmd", ["slurmd", "-D", "-N", nodename, "-f", str(conf)])

        def node_idle():
            check_alive()
            p = subprocess.run(
                ["sinfo", "--noheader", "--nodes", nodename, "--format=%T"],
                env=cluster.environ(),
                capture_output=True,
                text=True,
                timeout=10,
            )
            # one line per partition the node is in
            return p.returncode == 0 and set(p.stdout.split()) == {"idle"}

        try:
            _wait_for(node_idle, start_deadline, f"node {nodename} to be idle in sinfo")
        except SlurmTimeout as e:
            raise SlurmTimeout(f"{e}\n{cluster.log_tail()}") from None
        cluster.timings["slurm_start_s"] = round(time.monotonic() - t0, 2)
        cluster.timings["startup_total_s"] = round(time.monotonic() - t_start, 2)
        yield cluster
    finally:
        if in_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
        elif watchdog is not None:
            watchdog.cancel()
        t0 = time.monotonic()
        _teardown(cluster, procs)
        for f in files:
            f.close()
        cluster.timings["teardown_s"] = round(time.monotonic() - t0, 2)
        if short:
            # keep the logs with the caller, drop the runtime dir
            with contextlib.suppress(OSError):
                shutil.copytree(logdir, workdir / "slurm-logs", dirs_exist_ok=True)
                shutil.copytree(etcdir, workdir / "slurm-logs" / "etc", dirs_exist_ok=True)
            shutil.rmtree(rundir, ignore_errors=True)


def _teardown(cluster: SlurmCluster, procs: list[tuple[str, subprocess.Popen]]) -> None:
    running = {n for n, p in procs if p.poll() is None}
    # 1. cancel whatever is still queued/running and let slurmstepd finish its
    #    kill sequence (SIGTERM, KillWait=5 s, SIGKILL) while slurmd is still up
    if {"slurmctld", "slurmd", "munged"} <= running:
        with contextlib.suppress(Exception):
            subprocess.run(
                ["scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name],
                env=cluster.environ(),
                capture_output=True,
                timeout=15,
            )
        end = time.monotonic() + 15
        while time.monotonic() < end and _stepd_pids(cluster.rundir):
            time.sleep(0.25)
    # 2. stop the daemons by PID: slurmd, slurmctld, munged (reverse start order)
    for _, p in reversed(procs):
        _stop_pid(p.pid, proc=p)
    # 3. leftovers of our slurmd (stepds and job processes), children first -- by PID
    leftovers = _stepd_pids(cluster.rundir)
    for pid in reversed(leftovers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cluster.timings["leftover_pids_killed"] = len(leftovers)
