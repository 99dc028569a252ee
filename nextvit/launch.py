"""Which launcher started this process, torchrun or SLURM's srun, and where its processes meet.

torchrun sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` for each process.
`srun` sets `SLURM_PROCID`, `SLURM_NTASKS` and `SLURM_LOCALID` instead, and says nothing about a
rendezvous: the address is the first host of the job's node list (or `MASTER_ADDR`), the port
`MASTER_PORT` or one derived from the job id, so that two jobs sharing a node do not collide.
`export_rendezvous` writes the torchrun variables, so that `init_process_group("env://")`, and any
library that reads them, work the same under both launchers.

Only the standard library is used: classification/ and nextvit.mm both import this module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

__all__ = [
    "Launch",
    "default_port",
    "detect_launch",
    "expand_nodelist",
    "export_rendezvous",
    "first_host",
    "slurm_launch",
    "torchrun_launch",
]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Launch:
    """This process's place in the run, and the rendezvous of its process group."""

    launcher: str  # "torchrun", "slurm" or "none" (a single process started by hand)
    rank: int
    world_size: int
    local_rank: int
    master_addr: str | None = None
    master_port: int | None = None

    def describe(self) -> str:
        """One line for the log: which launcher, how many processes, where they meet."""
        if self.launcher == "none":
            return "launcher: none (one process; torchrun's and SLURM's variables are unset)"
        names = "/".join(TORCHRUN_VARIABLES if self.launcher == "torchrun" else SLURM_VARIABLES)
        where = f", rendezvous {self.master_addr}:{self.master_port}" if self.master_addr else ""
        return f"launcher: {self.launcher} ({names}), {self.world_size} process(es){where}"


def _split_top_level(text: str) -> list[str]:
    """Split at the commas outside brackets: 'a[1-2,4],b' -> ['a[1-2,4]', 'b']."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in node list {text!r}")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in node list {text!r}")
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_range(spec: str, nodelist: str) -> list[str]:
    """'01-03,07' -> ['01', '02', '03', '07']: zero padding is kept, as SLURM writes it."""
    values = []
    for item in spec.split(","):
        low, sep, high = item.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"cannot read the range [{spec}] of node list {nodelist!r}")
        width = len(low)
        stop = int(high) if sep else int(low)
        values += [str(n).zfill(width) for n in range(int(low), stop + 1)]
    return values


def expand_nodelist(nodelist: str) -> list[str]:
    """The host names of a SLURM node list in SLURM's compact form.

    `node[01-03,07]` -> node01 node02 node03 node07; `a1,a2`; `rack[1-2]-gpu[1-2]` (every
    combination, in SLURM's order).
    """
    hosts = []
    for part in _split_top_level(nodelist.strip()):
        match = re.search(r"\[([^\[\]]*)\]", part)
        if match is None:
            hosts.append(part)
            continue
        head, tail = part[: match.start()], part[match.end() :]
        for value in _expand_range(match.group(1), nodelist):
            hosts += expand_nodelist(head + value + tail)
    return hosts


def first_host(nodelist: str) -> str:
    """The first host of a node list: `scontrol show hostnames` where SLURM's tools are installed
    (it knows every form SLURM writes), otherwise `expand_nodelist`."""
    if shutil.which("scontrol"):
        result = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        names = result.stdout.split()
        if result.returncode == 0 and names:
            return names[0]
    hosts = expand_nodelist(nodelist)
    if not hosts:
        raise ValueError(f"the SLURM node list {nodelist!r} names no host")
    return hosts[0]


def default_port(job_id: str | None) -> int:
    """A rendezvous port for a SLURM job: 20000-29999 from the job id (outside Linux's ephemeral
    range, different for jobs that share a node), or 29500 without a job id."""
    if job_id and job_id.isdigit():
        return 20000 + int(job_id) % 10000
    return DEFAULT_PORT


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number") from None


def torchrun_launch(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The launch torchrun's variables describe, or None when they are not all set."""
    env = os.environ if environ is None else environ
    if not all(name in env for name in TORCHRUN_VARIABLES):
        return None
    port = env.get("MASTER_PORT")
    return Launch(
        "torchrun",
        _int(env, "RANK"),
        _int(env, "WORLD_SIZE"),
        _int(env, "LOCAL_RANK"),
        env.get("MASTER_ADDR"),
        int(port) if port else None,
    )


def slurm_launch(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The launch srun's variables describe, or None when they are not all set.

    The rendezvous: `MASTER_ADDR`, else the first host of `SLURM_JOB_NODELIST` (`SLURM_NODELIST`);
    `MASTER_PORT`, else `default_port(SLURM_JOB_ID)`.
    """
    env = os.environ if environ is None else environ
    if not all(name in env for name in SLURM_VARIABLES):
        return None
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    addr = env.get("MASTER_ADDR") or (first_host(nodelist) if nodelist else None)
    if addr is None:
        raise ValueError("SLURM_PROCID is set but neither MASTER_ADDR nor SLURM_JOB_NODELIST: no rendezvous address")
    port = _int(env, "MASTER_PORT") if env.get("MASTER_PORT") else default_port(env.get("SLURM_JOB_ID"))
    return Launch("slurm", _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"), _int(env, "SLURM_LOCALID"), addr, port)


def detect_launch(environ: Mapping[str, str] | None = None) -> Launch:
    """The launcher from the environment: torchrun's variables first, then SLURM's, else one process.

    torchrun's win because torchrun may itself run inside a SLURM allocation (one srun task per node,
    torchrun starting that node's processes). Raises ValueError naming a variable that cannot be read.
    """
    return torchrun_launch(environ) or slurm_launch(environ) or Launch("none", 0, 1, 0)


def export_rendezvous(launch: Launch, environ: MutableMapping[str, str] | None = None) -> None:
    """Write the torchrun variables of `launch`, so that `init_process_group` (env://) finds them."""
    env = os.environ if environ is None else environ
    env.update(RANK=str(launch.rank), WORLD_SIZE=str(launch.world_size), LOCAL_RANK=str(launch.local_rank))
    if launch.master_addr is not None:
        env["MASTER_ADDR"] = launch.master_addr
    if launch.master_port is not None:
        env["MASTER_PORT"] = str(launch.master_port)
