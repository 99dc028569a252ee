"""SLURM launch without SLURM: nextvit.launch, the slurm_*.sh scripts, and runs started as srun starts them.

A stand-in `srun` (written by the `fake_srun` fixture) starts its command once per task with
SLURM's variables and none of torchrun's, as the real one does on one node.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nextvit.launch import (
    Launch,
    default_port,
    detect_launch,
    expand_nodelist,
    export_rendezvous,
    first_host,
    slurm_launch,
)
from nextvit.synthetic import make_classification_dataset

REPO = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash") or "/bin/bash"
SLURM_SCRIPTS = {
    "classification/slurm_train.sh": "PARTITION JOB_NAME NGPUS",
    "detection/slurm_train.sh": "PARTITION JOB_NAME CONFIG NGPUS",
    "detection/slurm_test.sh": "PARTITION JOB_NAME CONFIG CHECKPOINT NGPUS",
    "segmentation/slurm_train.sh": "PARTITION JOB_NAME CONFIG NGPUS",
    "segmentation/slurm_test.sh": "PARTITION JOB_NAME CONFIG CHECKPOINT NGPUS",
}
TORCHRUN_ONLY = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")  # srun passes MASTER_ADDR/PORT through
LAUNCHER_VARIABLES = (*TORCHRUN_ONLY, "MASTER_ADDR", "MASTER_PORT")

FAKE_SRUN = """#!{python}
# srun's stand-in: records its arguments, then starts the command once per task with SLURM's variables
import json, os, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_SRUN_RECORD"], "w") as f:
    json.dump(args, f)
options, i = {{}}, 0
while i < len(args) and args[i].startswith("-"):
    if args[i] == "-p":
        options["-p"], i = args[i + 1], i + 2
    else:
        key, _, value = args[i].partition("=")
        options[key], i = value, i + 1
command, ntasks = args[i:], int(options.get("--ntasks", 1))
if os.environ.get("FAKE_SRUN_DRY"):
    sys.exit(0)
base = {{k: v for k, v in os.environ.items() if k not in {torchrun}}}
base.update(SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="localhost", SLURM_NODELIST="localhost", SLURM_NTASKS=str(ntasks))
tasks = [subprocess.Popen(command, env=dict(base, SLURM_PROCID=str(r), SLURM_LOCALID=str(r))) for r in range(ntasks)]
while any(t.poll() is None for t in tasks):
    if any(t.poll() not in (None, 0) for t in tasks):  # --kill-on-bad-exit=1
        for t in tasks:
            t.kill()
    time.sleep(0.1)
sys.exit(max(t.returncode for t in tasks))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This interpreter, one thread per process, and neither launcher's variables."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("SLURM_")}
    return dict(env, PYTHON=sys.executable, OMP_NUM_THREADS="1", **extra)


@pytest.fixture
def fake_srun(tmp_path) -> dict[str, str]:
    """The environment that puts the stand-in srun first on PATH; its arguments land in `record`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN.format(python=sys.executable, torchrun=TORCHRUN_ONLY))
    srun.chmod(0o755)
    return clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_SRUN_RECORD=str(tmp_path / "srun.json"))


def run_script(script: str, *args, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(REPO / script), *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=REPO / script.split("/")[0], timeout=timeout)  # fmt: skip


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


# --------------------------------------------------------------------------------------------
# nextvit.launch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("node07", ["node07"]),
        ("a1,a2", ["a1", "a2"]),
        ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
        ("gpu[8-10],cpu1", ["gpu8", "gpu9", "gpu10", "cpu1"]),
        ("rack[1-2]-n[1,3]", ["rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"]),
    ],
)
def test_node_lists_expand_as_slurm_writes_them(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["node[01-04", "node01]", "node[a-b]"])
def test_unreadable_node_lists_are_named(nodelist):
    with pytest.raises(ValueError, match="node list"):
        expand_nodelist(nodelist)


def test_first_host_asks_scontrol_where_it_is_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol
    assert first_host("gpu[03-04]") == "gpu03"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\necho from-scontrol\necho other\n")
    scontrol.chmod(0o755)
    assert first_host("gpu[03-04]") == "from-scontrol"


def test_launcher_from_the_environment():
    slurm = dict(SLURM_PROCID="5", SLURM_NTASKS="16", SLURM_LOCALID="1", SLURM_JOB_NODELIST="gpu[03-04]")
    launch = detect_launch(dict(slurm, SLURM_JOB_ID="1234567"))
    assert launch == Launch("slurm", 5, 16, 1, "gpu03", 20000 + 1234567 % 10000)
    assert detect_launch(dict(slurm, MASTER_ADDR="10.0.0.1", MASTER_PORT="29999")).master_addr == "10.0.0.1"
    assert detect_launch(dict(slurm, MASTER_PORT="29999")).master_port == 29999
    assert default_port("1234567") == 24567 and default_port(None) == 29500
    # torchrun's variables win (torchrun started inside an allocation), and their absence means one process
    torchrun = dict(RANK="3", WORLD_SIZE="4", LOCAL_RANK="3", MASTER_ADDR="h", MASTER_PORT="1234")
    assert detect_launch(dict(slurm, **torchrun)) == Launch("torchrun", 3, 4, 3, "h", 1234)
    assert detect_launch({}) == Launch("none", 0, 1, 0)
    assert "launcher: slurm (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID), 16 process(es)" in launch.describe()
    with pytest.raises(ValueError, match="SLURM_NTASKS='x'"):
        detect_launch(dict(slurm, SLURM_NTASKS="x"))
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        slurm_launch(dict(SLURM_PROCID="0", SLURM_NTASKS="2", SLURM_LOCALID="0"))
    env: dict[str, str] = {}
    export_rendezvous(launch, env)
    assert env == dict(RANK="5", WORLD_SIZE="16", LOCAL_RANK="1", MASTER_ADDR="gpu03", MASTER_PORT="24567")


# --------------------------------------------------------------------------------------------
# the scripts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [*SLURM_SCRIPTS, "scripts/srun.sh", "scripts/torchrun.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True).returncode == 0


@pytest.mark.parametrize("script", SLURM_SCRIPTS)
def test_slurm_scripts_refuse_missing_arguments_with_their_usage(script, fake_srun):
    needed = SLURM_SCRIPTS[script].split()
    name = Path(script).name
    for given in ([], ["gpu", "job"], ["gpu", "job", "c.py", "ckpt", "two"][: len(needed)]):
        result = run_script(script, *given, env=fake_srun)
        assert result.returncode == 2, (given, result.stderr)
        assert result.stderr.startswith(f"usage: bash {name} {SLURM_SCRIPTS[script]} ["), result.stderr
    assert not Path(fake_srun["FAKE_SRUN_RECORD"]).exists()  # srun never started


def test_slurm_scripts_without_srun_say_where_they_run():
    if shutil.which("srun", path="/usr/bin:/bin"):
        pytest.skip("srun is installed here")
    result = run_script("detection/slurm_train.sh", "gpu", "job", "c.py", "2", env=clean_env(PATH="/usr/bin:/bin"))
    assert result.returncode == 1 and "srun not found" in result.stderr


@pytest.mark.parametrize(
    "script, args, entry",
    [
        ("classification/slurm_train.sh", ["4", "--epochs", "3"], ["classification/main.py", "--output-dir"]),
        ("detection/slurm_train.sh", ["c.py", "4", "--amp"], ["detection/train.py", "c.py", "--launcher", "slurm"]),
        ("detection/slurm_test.sh", ["c.py", "k.pth", "4"], ["detection/test.py", "c.py", "k.pth", "--launcher"]),
        ("segmentation/slurm_train.sh", ["c.py", "4"], ["segmentation/train.py", "c.py", "--launcher", "slurm"]),
        ("segmentation/slurm_test.sh", ["c.py", "k.pth", "4"], ["segmentation/test.py", "c.py", "k.pth"]),
    ],
)
def test_slurm_scripts_build_openmmlabs_srun_line(script, args, entry, fake_srun):
    env = dict(fake_srun, FAKE_SRUN_DRY="1")
    check(run_script(script, "gpu", "nextvit_job", *args, env=env))
    srun = json.loads(Path(env["FAKE_SRUN_RECORD"]).read_text())
    expected = ["-p", "gpu", "--job-name=nextvit_job", "--gres=gpu:4", "--ntasks=4", "--ntasks-per-node=4",
                "--cpus-per-task=5", "--kill-on-bad-exit=1", sys.executable, "-u"]  # fmt: skip
    assert srun[: len(expected)] == expected, srun
    command = " ".join(srun[len(expected) :])
    assert " ".join(entry) in command.replace(str(REPO) + "/", ""), command
    # GPUS_PER_NODE, CPUS_PER_TASK and SRUN_ARGS from the environment; 16 tasks over two nodes
    env.update(GPUS_PER_NODE="8", CPUS_PER_TASK="10", SRUN_ARGS="--time=1:00:00 --qos=low")
    check(run_script(script, "gpu", "nextvit_job", *[("16" if a == "4" else a) for a in args], env=env))
    srun = json.loads(Path(env["FAKE_SRUN_RECORD"]).read_text())
    assert srun[2:10] == ["--job-name=nextvit_job", "--gres=gpu:8", "--ntasks=16", "--ntasks-per-node=8",
                          "--cpus-per-task=10", "--kill-on-bad-exit=1", "--time=1:00:00", "--qos=low"]  # fmt: skip


# --------------------------------------------------------------------------------------------
# runs started as srun starts them, against torchrun's
# --------------------------------------------------------------------------------------------


def epoch_lines(stdout: str) -> list[str]:
    """The per-step loss lines of rank 0, without their ETA."""
    return [re.sub(r" eta \S+", "", line) for line in stdout.splitlines() if line.startswith("Epoch: [")]


@pytest.mark.slow
def test_classification_under_slurm_logs_the_losses_of_torchrun(fake_srun, tmp_path):
    data = make_classification_dataset(
        tmp_path / "shapes", num_classes=4, train_per_class=8, val_per_class=3, size=48, seed=0
    )
    flags = "--model nextvit_tiny --input-size 48 --batch-size 8 --num-workers 0 --print-freq 1 --mixup 0 --cutmix 0"
    # a large lr without warm-up, so that the second step and the evaluation see weights that moved
    flags = [*flags.split(), "--reprob", "0", "--aa", "none", "--lr", "0.5", "--warmup-epochs", "0", "--epochs", "1"]
    flags += ["--seed", "3", "--data-path", data]
    torchrun = check(run_script("classification/train.sh", "2", *flags, "--output-dir", tmp_path / "torchrun",
                                env=clean_env(PORT=str(free_port()))))  # fmt: skip
    port = free_port()
    env = dict(fake_srun, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    slurm = check(run_script("classification/slurm_train.sh", "debug", "nextvit_test", "2", *flags,
                             "--output-dir", tmp_path / "slurm", env=env))  # fmt: skip
    assert "launcher: torchrun (RANK/WORLD_SIZE/LOCAL_RANK), 2 process(es)" in torchrun.stdout
    assert f"launcher: slurm (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID), 2 process(es), rendezvous 127.0.0.1:{port}" in (
        slurm.stdout
    )
    assert "global batch 16" in slurm.stdout and "2 steps/epoch" in slurm.stdout
    # the same steps, losses and evaluation (over both processes: train.sh and slurm_train.sh pass --dist-eval)
    assert epoch_lines(slurm.stdout) == epoch_lines(torchrun.stdout) and len(epoch_lines(slurm.stdout)) == 2
    (a,), (b,) = [[json.loads(x) for x in (tmp_path / run / "log.txt").read_text().splitlines()] for run in
                  ("torchrun", "slurm")]  # fmt: skip
    for key in ("lr", "train_loss", "test_loss", "test_acc1", "test_acc5"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    weights = [
        torch.load(tmp_path / run / "checkpoint.pth", weights_only=True)["model"] for run in ("torchrun", "slurm")
    ]
    assert max((weights[0][k].double() - weights[1][k].double()).abs().max().item() for k in weights[0]) <= 1e-6


@pytest.mark.slow
@pytest.mark.mm
def test_segmentation_trains_under_mmengines_slurm_launcher(fake_srun, tmp_path):
    from test_segmentation import TINY, TINY_FPN

    from nextvit.synthetic import make_ade_dataset

    ade = make_ade_dataset(tmp_path / "ade", train_images=4, val_images=2, seed=0)
    config = tmp_path / "tiny_fpn.py"
    config.write_text(
        TINY.format(base=REPO / "segmentation/configs/fpn_512_nextvit_small_80k.py", data=ade, **TINY_FPN)
    )
    port = free_port()
    env = dict(fake_srun, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    short = ["train_cfg.max_iters=1", "train_cfg.val_interval=10", "default_hooks.checkpoint.interval=1"]
    result = check(run_script("segmentation/slurm_train.sh", "debug", "seg_test", config, "2", "--work-dir",
                              tmp_path / "work", "--cfg-options", *short, env=env, timeout=300))  # fmt: skip
    assert f"launcher: slurm (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID), 2 process(es), rendezvous 127.0.0.1:{port}" in (
        result.stdout
    )
    assert "Distributed launcher: slurm" in result.stdout and "Distributed training: True" in result.stdout
    assert "GPU number: 2" in result.stdout  # mmengine's name for the world size
    assert "Iter(train) [1/1]" in result.stdout and (tmp_path / "work" / "iter_1.pth").is_file()
