"""SLURM through submitit: one job array per resource group, split by MaxArraySize, one
sbatch per array; states for every job from a single sacct call."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

from sweeper.errors import UserError
from sweeper.run.worker import Worker
from sweeper.scheduler.base import Group, JobState
from sweeper.states import Cause, SchedulerState
from sweeper.study import SlurmExecutor

J, C = SchedulerState, Cause
# sacct state -> (sweeper's view, cause)
_SACCT = {
    "PENDING": (J.PENDING, None),
    "REQUEUED": (J.PENDING, None),
    "RESIZING": (J.PENDING, None),
    "SUSPENDED": (J.PENDING, None),
    "RUNNING": (J.RUNNING, None),
    "COMPLETING": (J.RUNNING, None),
    "COMPLETED": (J.FINISHED, None),
    "FAILED": (J.FAILED, C.KILLED),
    "CANCELLED": (J.CANCELLED, C.CANCELLED),
    "TIMEOUT": (J.INTERRUPTED, C.TIMEOUT),
    "PREEMPTED": (J.INTERRUPTED, C.PREEMPTED),
    "NODE_FAIL": (J.INTERRUPTED, C.NODE_FAIL),
    "BOOT_FAIL": (J.INTERRUPTED, C.NODE_FAIL),
    "OUT_OF_MEMORY": (J.FAILED, C.OUT_OF_MEMORY),
    "DEADLINE": (J.INTERRUPTED, C.TIMEOUT),
}

# resources key -> submitit parameter
_PARAMS = {
    "timeout_min": "timeout_min",
    "nodes": "nodes",
    "gpus_per_node": "gpus_per_node",
    "tasks_per_node": "tasks_per_node",
    "cpus_per_task": "cpus_per_task",
    "mem_gb": "mem_gb",
    "partition": "slurm_partition",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
    "exclusive": "slurm_exclusive",
    "sbatch": "slurm_additional_parameters",
}


class SlurmBackend:
    kind = "slurm"
    inline = False

    def __init__(self, executor: SlurmExecutor, folder: Path):
        self.config = executor
        self.folder = folder

    def max_array_size(self) -> int:
        if self.config.max_array_size:
            return self.config.max_array_size
        try:
            out = subprocess.run(
                ["scontrol", "show", "config"], capture_output=True, text=True, timeout=60, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as e:
            raise UserError(
                f"cannot reach SLURM (scontrol show config: {e}); is this a cluster login node?"
            ) from None
        match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
        return int(match.group(1)) if match else 1001

    def parameters(self, resources: dict, name: str) -> dict:
        params = {_PARAMS[k]: v for k, v in resources.items()}
        params["timeout_min"] = math.ceil(params.get("timeout_min", 60))  # sbatch --time takes minutes
        return params | {
            "name": name,
            "slurm_array_parallelism": self.config.array_parallelism,
            "slurm_signal_delay_s": self.config.signal_delay_s,
        }

    def submit(self, task: str, workdir: str, token: str, groups: list[Group], name: str) -> dict[str, str]:
        size = self.max_array_size() - 1  # array indices run 0 .. MaxArraySize - 1
        per_job = self.config.cells_per_job
        ids: dict[str, str] = {}
        for group in groups:
            executor = submitit.AutoExecutor(folder=self.folder, cluster="slurm")
            params = self.parameters(group.resources, name)
            params["timeout_min"] *= per_job  # a pack runs its cells one after another
            executor.update_parameters(**params)
            packs = [group.keys[i : i + per_job] for i in range(0, len(group.keys), per_job)]
            for start in range(0, len(packs), size):
                chunk = packs[start : start + size]
                with executor.batch():
                    jobs = [executor.submit(Worker(task, workdir, pack, token)) for pack in chunk]
                ids.update({key: job.job_id for pack, job in zip(chunk, jobs, strict=False) for key in pack})
        return ids

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        """One sacct call for all arrays; a pending range like 12_[3-9] covers its tasks.

        A job killed for exceeding its memory reads OUT_OF_MEMORY where cgroups enforce it; where
        the accounting poller does (OverMemoryKill), sacct says FAILED or CANCELLED, and a step's
        MaxRSS past the job's ReqMem tells the cause."""
        bases = sorted({j.split("_")[0] for j in job_ids})
        if not bases:
            return {}
        try:
            out = subprocess.run(
                ["sacct", "-P", "-o", "JobID,State,ReqMem,MaxRSS", "-j", ",".join(bases)],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return {j: JobState(J.UNKNOWN) for j in job_ids}
        return read_sacct(out, job_ids)

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], capture_output=True, timeout=120, check=False)


def _bytes(size: str) -> float | None:
    """sacct's '500M', '1065116K', '2G' (binary units) -> bytes; '' -> 0; None when unreadable."""
    if not size.strip():
        return 0.0
    match = re.fullmatch(r"([\d.]+)([KMGTP]?)[nc]?", size.strip())  # 22.05 and older spellings
    if not match:
        return None
    return float(match.group(1)) * 1024 ** " KMGTP".index(match.group(2) or " ")


def read_sacct(out: str, job_ids: list[str]) -> dict[str, JobState]:
    """The jobs' states from `sacct -P -o JobID,State,ReqMem,MaxRSS` (with its header line).

    The jobs' lines (array ranges like 12_[3-9%2] expanded) are read by submitit's own parser;
    the steps' (12_3.batch, 12_3.0) give the peak memory and whether a step still runs.
    """
    jobs = SlurmInfoWatcher().read_info(out)
    peak: dict[str, float] = {}
    stepping: set[str] = set()  # jobs with a step running
    for line in out.splitlines()[1:]:
        job, raw, _req, rss = (line.split("|") + ["", "", ""])[:4]
        if "." in job:  # a step (batch, extern, 0...): only its peak memory counts
            job = job.split(".")[0]
            peak[job] = max(peak.get(job, 0.0), _bytes(rss) or 0.0)
            stepping.update([job] if raw.startswith("RUNNING") else [])
    seen: dict[str, JobState] = {}
    for job, info in jobs.items():
        raw = info.get("State", "")
        state, cause = _SACCT.get(raw.split()[0] if raw else "", (J.UNKNOWN, None))
        requested = _bytes(info.get("ReqMem", ""))
        # slurmdbd may record a job's start after its steps' (the job PENDING, its steps RUNNING), and
        # its end before its request ('16?') or its steps' end: the job runs (or is still ending).
        ended = state in {J.FAILED, J.CANCELLED}
        if (job in stepping and (ended or state == J.PENDING)) or (ended and requested is None):
            seen[job] = JobState(J.RUNNING)
        elif ended and 0 < (requested or 0) <= peak.get(job, 0.0):
            seen[job] = JobState(J.FAILED, C.OUT_OF_MEMORY)
        else:
            seen[job] = JobState(state, cause)
    return {j: seen.get(j, JobState(J.UNKNOWN)) for j in job_ids}
