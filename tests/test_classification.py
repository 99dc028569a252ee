"""classification/: the recipe, train.sh end to end on generated data, resume, fine-tuning, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nextvit
from nextvit.synthetic import make_classification_dataset

REPO = Path(__file__).resolve().parents[1]
TRAIN_SH = REPO / "classification" / "train.sh"
NO_AUG = "--mixup 0 --cutmix 0 --reprob 0 --aa none".split()
FAST = "--model nextvit_tiny --input-size 48 --batch-size 8 --num-workers 0 --print-freq 1".split() + NO_AUG
_port = [29700 + os.getpid() % 200]


def run_train(nproc: int, *args, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    _port[0] += 1
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_port[0]), OMP_NUM_THREADS="1")
    result = subprocess.run(
        ["bash", str(TRAIN_SH), str(nproc), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO / "classification",
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.sh failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_classification_dataset(
        tmp_path_factory.mktemp("shapes"), num_classes=4, train_per_class=16, val_per_class=4, size=48, seed=0
    )


def read_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def main_module(import_script):
    return import_script("classification", "main")


@pytest.fixture(scope="module")
def parse_args(main_module):
    return lambda *argv: main_module.get_args_parser().parse_args(list(argv))


def test_recipe_defaults(parse_args):
    a = parse_args()
    assert (a.model, a.batch_size, a.epochs, a.input_size) == ("nextvit_small", 64, 300, 224)
    assert (a.lr, a.warmup_lr, a.min_lr, a.warmup_epochs, a.weight_decay) == (5e-4, 1e-6, 1e-5, 5, 0.05)
    assert (a.opt, a.opt_eps, a.opt_betas, a.clip_grad, a.sched) == ("adamw", 1e-8, None, 5.0, "cosine")
    assert (a.aa, a.train_interpolation, a.reprob, a.remode, a.smoothing) == (
        "rand-m9-mstd0.5-inc1",
        "bicubic",
        0.25,
        "pixel",
        0.1,
    )
    assert (a.mixup, a.cutmix, a.mixup_switch_prob, a.mixup_mode, a.repeated_aug) == (0.8, 1.0, 0.5, "batch", False)
    assert (a.crop_pct, a.seed, a.drop_path, a.model_ema, a.dist_eval) == (0.875, 0, None, False, False)
    # the original's flags keep working, including the misspelt --throughout and --finetune without a value
    b = parse_args("--throughout", "--finetune", "--resume", "x.pth", "--sched", "step", "--decay-epochs", "60")
    assert b.throughput and b.finetune is True and b.resume == "x.pth" and b.decay_epochs == 60


def test_drop_path_flag_is_honoured(main_module, parse_args):
    main = main_module
    default = main.build_model(parse_args("--model", "nextvit_base"), 10)
    assert default.stages[3].blocks[-1].mlp_drop_path.drop_prob == pytest.approx(0.2)
    small = main.build_model(parse_args("--model", "nextvit_small"), 10)
    assert small.stages[3].blocks[-1].mlp_drop_path.drop_prob == pytest.approx(0.1)
    custom = main.build_model(parse_args("--model", "nextvit_small", "--drop-path", "0.3"), 10)
    assert custom.stages[3].blocks[-1].mlp_drop_path.drop_prob == pytest.approx(0.3)


def test_train_two_epochs_then_eval_folded_and_unfolded(shapes, tmp_path):
    out = tmp_path / "run"
    run_train(1, *FAST, "--data-path", shapes, "--epochs", "2", "--output-dir", out)
    for name in (
        "checkpoint.pth",
        "checkpoint_best.pth",
        "log.txt",
        "args.yaml",
        "curves.png",
        "model.safetensors",
        "config.json",
    ):
        assert (out / name).is_file(), name
    rows = read_log(out)
    assert [r["epoch"] for r in rows] == [0, 1]
    for key in (
        "lr",
        "train_loss",
        "test_loss",
        "test_acc1",
        "test_acc5",
        "epoch_time",
        "images_per_s",
        "max_memory_mb",
    ):
        assert all(isinstance(r[key], float) for r in rows), key
    state = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "best_acc1", "args"} <= set(state) and state["epoch"] == 1
    # AdamW without weight decay on biases and norms; lr 5e-4 x 8/512 reached by a 5-epoch warm-up from 1e-6
    groups = state["optimizer"]["param_groups"]
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.05] and groups[0]["eps"] == 1e-8
    assert rows[0]["lr"] == pytest.approx(1e-6) and rows[1]["lr"] == pytest.approx(1e-6 + (5e-4 * 8 / 512 - 1e-6) / 5)
    assert json.loads((out / "config.json").read_text())["class_names"] == ["circle", "ring", "square", "triangle"]
    assert nextvit.create_model("nextvit_tiny", num_classes=4, checkpoint_path=out / "model.safetensors")

    folded = run_train(1, *FAST, "--data-path", shapes, "--resume", out / "checkpoint.pth", "--eval")
    unfolded = run_train(1, *FAST, "--data-path", shapes, "--resume", out / "checkpoint.pth", "--eval", "--no-fold")
    line = [x for x in folded.stdout.splitlines() if x.startswith("* Acc@1")][0]
    assert "BatchNorm folded" in line
    acc = [
        [float(t) for t in x.split()[2:7:2]]
        for r in (folded, unfolded)
        for x in r.stdout.splitlines()
        if x.startswith("* Acc@1")
    ]
    assert acc[0][:2] == acc[1][:2] and abs(acc[0][2] - acc[1][2]) < 1e-3  # same Acc@1/@5, loss within 1e-3


def test_two_processes_over_gloo(shapes, tmp_path):
    out = tmp_path / "ddp"
    result = run_train(2, *FAST, "--data-path", shapes, "--epochs", "1", "--output-dir", out)
    assert "2 process(es)" in result.stdout and "global batch 16" in result.stdout
    assert len(read_log(out)) == 1 and (out / "checkpoint.pth").is_file()
    evaluated = run_train(2, *FAST, "--data-path", shapes, "--resume", out / "checkpoint.pth", "--eval")
    assert "test images" in evaluated.stdout


def test_resume_auto_continues_with_the_same_state(shapes, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_train(1, *FAST, "--data-path", shapes, "--epochs", "2", "--output-dir", straight)
    run_train(1, *FAST, "--data-path", shapes, "--epochs", "1", "--output-dir", split)
    result = run_train(1, *FAST, "--data-path", shapes, "--epochs", "2", "--output-dir", split, "--resume", "auto")
    assert "resumed from" in result.stdout and "from epoch 1" in result.stdout
    assert [r["epoch"] for r in read_log(split)] == [0, 1]
    a = torch.load(straight / "checkpoint.pth", weights_only=True)
    b = torch.load(split / "checkpoint.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    assert a["lr_scheduler"] == b["lr_scheduler"]
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"] == 2 * 8  # 64 images / 8


def test_killed_run_resumes_from_its_last_checkpoint(shapes, tmp_path):
    out = tmp_path / "killed"
    _port[0] += 1
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_port[0]), OMP_NUM_THREADS="1")
    cmd = [
        "bash",
        str(TRAIN_SH),
        "1",
        *map(str, FAST),
        "--data-path",
        str(shapes),
        "--epochs",
        "50",
        "--output-dir",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not (out / "log.txt").is_file() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "log.txt").is_file(), "no epoch finished in time"
    finally:  # kill the launcher and its worker (torchrun starts workers in their own session)
        os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", f"output-dir {out}"], check=False)
        proc.wait()
        time.sleep(0.5)
    done = torch.load(out / "checkpoint.pth", weights_only=True)["epoch"]  # a complete file, never a torn one
    result = run_train(
        1, *FAST, "--data-path", shapes, "--epochs", str(done + 2), "--output-dir", out, "--resume", "auto"
    )
    assert f"from epoch {done + 1}" in result.stdout
    assert read_log(out)[-1]["epoch"] == done + 1


def test_finetune_at_another_input_size_and_class_count(shapes, tmp_path):
    base = tmp_path / "base"
    run_train(1, *FAST, "--data-path", shapes, "--epochs", "1", "--output-dir", base)
    three = tmp_path / "three"
    for c in ("circle", "ring", "square"):
        for split in ("train", "val"):
            (three / split / c).mkdir(parents=True)
            for f in sorted((shapes / split / c).iterdir()):
                (three / split / c / f.name).symlink_to(f)
    out = tmp_path / "ft"
    fast = [*FAST]
    fast[fast.index("--input-size") + 1] = "64"
    # the original README's fine-tuning flags: constant lr through a step schedule that never decays
    ft_flags = [
        "--lr",
        "5e-6",
        "--warmup-epochs",
        "0",
        "--weight-decay",
        "1e-8",
        "--sched",
        "step",
        "--decay-epochs",
        "60",
    ]
    result = run_train(
        1, *fast, "--data-path", three, "--epochs", "2", "--output-dir", out,
        "--resume", base / "checkpoint.pth", "--finetune", *ft_flags,
    )  # fmt: skip
    assert "classifier dropped" in result.stdout and "from epoch 0" in result.stdout
    assert json.loads((out / "config.json").read_text())["input_size"] == 64
    assert [r["lr"] for r in read_log(out)] == pytest.approx([5e-6 * 8 / 512] * 2)


def test_throughput_flag_and_its_original_spelling():
    for flag in ("--throughput", "--throughout"):
        result = run_train(1, "--model", "nextvit_tiny", "--input-size", "48", "--batch-size", "4", flag)
        assert "images/s" in result.stdout


def test_tiny_model_learns_an_easy_task(tmp_path):
    data = make_classification_dataset(
        tmp_path / "easy",
        classes=["circle", "hstripes", "checker", "triangle"],
        train_per_class=40,
        val_per_class=10,
        size=48,
        seed=1,
    )
    out = tmp_path / "learn"
    recipe = "--model nextvit_tiny --input-size 48 --batch-size 16 --num-workers 0 --smoothing 0 --lr 2e-2"
    run_train(
        1, *recipe.split(), *NO_AUG, "--warmup-epochs", "1", "--epochs", "8", "--data-path", data, "--output-dir", out
    )
    best = max(r["test_acc1"] for r in read_log(out))
    assert best >= 60.0, f"best val Acc@1 {best}% on a 4-class task (chance 25%)"


@pytest.mark.parametrize("case", ["missing", "no_train", "empty_class", "class_mismatch", "corrupt"])
def test_bad_data_names_the_path(shapes, tmp_path, case):
    import shutil

    data = tmp_path / "data"
    if case != "missing":
        shutil.copytree(shapes, data)
    expected = {
        "missing": str(data),
        "no_train": str(data / "train"),
        "empty_class": str(data / "val" / "ring"),
        "class_mismatch": "only in train ['square']",
        "corrupt": "cannot read image",
    }[case]
    if case == "no_train":
        shutil.rmtree(data / "train")
    elif case == "empty_class":
        for f in (data / "val" / "ring").iterdir():
            f.unlink()
    elif case == "class_mismatch":
        shutil.rmtree(data / "val" / "square")
    elif case == "corrupt":
        bad = data / "train" / "circle" / "circle_00000.png"
        bad.write_bytes(bad.read_bytes()[:100])
        expected = f"cannot read image {bad}"
    result = run_train(1, *FAST, "--data-path", data, "--epochs", "1", "--output-dir", tmp_path / "o", check=False)
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout, (result.stdout[-2000:], result.stderr[-2000:])
    if case == "corrupt":
        ok = run_train(
            1, *FAST, "--data-path", data, "--epochs", "1", "--output-dir", tmp_path / "o2", "--skip-corrupt"
        )
        assert "skipped 1 unreadable image(s)" in ok.stdout


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(shapes, tmp_path):
    out = tmp_path / "nan"
    run_train(1, *FAST, "--data-path", shapes, "--epochs", "1", "--output-dir", out)
    before = (out / "checkpoint.pth").read_bytes()
    result = run_train(
        1,
        *FAST,
        "--data-path",
        shapes,
        "--epochs",
        "2",
        "--output-dir",
        out,
        "--finetune",
        out / "checkpoint.pth",
        "--lr",
        "1e38",
        "--clip-grad",
        "0",
        "--warmup-epochs",
        "0",
        check=False,
    )
    assert result.returncode != 0
    assert "at epoch 0, step" in result.stderr and "last good checkpoint" in result.stderr, result.stderr[-2000:]
    assert (out / "checkpoint.pth").read_bytes() == before


def test_bad_flags_are_reported(shapes, tmp_path):
    result = run_train(1, *FAST, "--data-path", shapes, "--eval", check=False)
    assert result.returncode != 0 and "--eval needs --resume" in result.stderr
    result = run_train(1, *FAST, "--data-path", shapes, "--batch-size", "1000", "--output-dir", tmp_path, check=False)
    assert result.returncode != 0 and "--batch-size 1000" in result.stderr
    bad = subprocess.run(["bash", str(TRAIN_SH), "two"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage: bash train.sh NGPUS" in bad.stderr


def test_bf16_on_cpu_with_model_ema(shapes, tmp_path):
    out = tmp_path / "ema"
    run_train(1, *FAST, "--data-path", shapes, "--epochs", "1", "--amp", "bf16", "--model-ema", "--output-dir", out)
    row = read_log(out)[0]
    assert isinstance(row["test_acc1_ema"], float)
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert state["model_ema"] is not None and state["args"]["amp"] == "bf16"
    refused = run_train(1, *FAST, "--data-path", shapes, "--amp", "fp16", "--output-dir", tmp_path / "x", check=False)
    assert refused.returncode != 0 and "--amp fp16 needs CUDA" in refused.stderr


def test_other_model_names_fall_back_to_timm(shapes, tmp_path):
    out = tmp_path / "resnet"
    result = run_train(1, *FAST, "--model", "resnet18", "--data-path", shapes, "--epochs", "1", "--output-dir", out)
    assert "model resnet18: 11,178,564 parameters" in result.stdout  # timm's resnet18 with a 4-class head
    assert len(read_log(out)) == 1


def test_progress_bar_on_a_terminal_and_lines_otherwise(import_script):
    import io

    engine = import_script("classification", "engine")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        progress = engine.Progress(20, "Epoch: [0]", every=10, stream=stream)
        for step in range(20):
            progress.update(step, loss=1.0)
    assert tty.getvalue().count("\r") == 20 and "[########################] 20/20 eta" in tty.getvalue()
    lines = pipe.getvalue().splitlines()
    assert lines == [f"Epoch: [0] [{n}/20] eta 0:00:00  loss: 1" for n in (10, 20)]
