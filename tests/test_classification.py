"""classification/: the recipe, train.sh end to end on generated data, resume, fine-tuning, errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import next_port, run_train

import nextvit
from nextvit.synthetic import make_classification_dataset

REPO = Path(__file__).resolve().parents[1]
TRAIN_SH = REPO / "classification" / "train.sh"
NO_AUG = "--mixup 0 --cutmix 0 --reprob 0 --aa none".split()
FAST = "--model nextvit_tiny --input-size 48 --batch-size 8 --num-workers 0 --print-freq 1".split() + NO_AUG


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


def test_flags_without_effect_parse_and_warn_once(main_module, parse_args, capsys):
    """--cooldown-epochs, --patience-epochs and --dist-url: the original's commands run, and say what is ignored."""
    args = parse_args("--cooldown-epochs", "0", "--patience-epochs", "3", "--dist-url", "tcp://10.0.0.1:23456")
    args.rank = 0
    main_module.warn_ignored_flags(args)
    warnings = capsys.readouterr().err.splitlines()
    assert [w.split(" has no effect: ")[0] for w in warnings] == [
        "warning: --cooldown-epochs 0",
        "warning: --patience-epochs 3",
        "warning: --dist-url tcp://10.0.0.1:23456",
    ]
    assert "--epochs" in warnings[0] and "plateau" in warnings[1] and "MASTER_ADDR" in warnings[2]
    defaults = parse_args()
    defaults.rank = 0
    main_module.warn_ignored_flags(defaults)  # the defaults are the original's: nothing to say
    other_rank = parse_args("--cooldown-epochs", "0")
    other_rank.rank = 1
    main_module.warn_ignored_flags(other_rank)  # rank 0 speaks for all
    assert capsys.readouterr().err == ""


def test_drop_path_flag_is_honoured(main_module, parse_args):
    main = main_module
    default = main.build_model(parse_args("--model", "nextvit_base"), 10)
    assert default.stages[3].blocks[-1].mlp_drop_path.drop_prob == pytest.approx(0.2)
    small = main.build_model(parse_args("--model", "nextvit_small"), 10)
    assert small.stages[3].blocks[-1].mlp_drop_path.drop_prob == pytest.approx(0.1)
    custom = main.build_model(parse_args("--model", "nextvit_small", "--drop-path", "0.3"), 10)
    assert custom.stages[3].blocks[-1].mlp_drop_path.drop_prob == pytest.approx(0.3)


@pytest.mark.slow
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


ORIGINAL_README_COMMAND = "--model nextvit_small --batch-size 256 --lr 5e-4 --warmup-epochs 20 --weight-decay 0.1"


@pytest.mark.slow
def test_the_original_readme_command_runs_with_every_default(main_module, shapes, tmp_path):
    """The original README's ImageNet command, with only the data path, epochs, batch size and input
    size changed: every other flag at the trainer's default (RandAugment m9 mstd0.5 inc1, mixup 0.8 /
    cutmix 1.0 with label smoothing 0.1, random erasing 0.25, drop path 0.1, clip 5, cosine, AdamW,
    10 loader workers, channels_last on CPU), the defaults users run and the other tests mostly turn off."""
    out = tmp_path / "original"
    flags = ORIGINAL_README_COMMAND.split()
    flags[flags.index("--batch-size") + 1] = "16"
    run_train(1, *flags, "--data-path", shapes, "--epochs", "2", "--input-size", "64", "--output-dir", out)
    rows = read_log(out)
    assert [r["epoch"] for r in rows] == [0, 1] and all(np.isfinite(r["train_loss"]) for r in rows)
    ran = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["args"]
    defaults = vars(main_module.get_args_parser().parse_args([]))
    kept = "aa mixup cutmix smoothing reprob remode color_jitter clip_grad sched opt num_workers train_interpolation"
    for key in (*kept.split(), "mixup_prob", "mixup_switch_prob", "model_ema", "drop", "repeated_aug", "amp"):
        assert ran[key] == defaults[key], key
    assert ran["drop_path"] == 0.1 and ran["channels_last"] is True
    assert (ran["model"], ran["lr"], ran["warmup_epochs"], ran["weight_decay"]) == ("nextvit_small", 5e-4, 20, 0.1)
    peak = 5e-4 * 16 / 512  # the 20-epoch warm-up from --warmup-lr 1e-6 towards the scaled lr
    assert rows[0]["lr"] == pytest.approx(1e-6) and rows[1]["lr"] == pytest.approx(1e-6 + (peak - 1e-6) / 20)


def test_the_default_schedule_loss_and_mixup_are_the_recipes(main_module, parse_args):
    """What the parser's defaults build, over a whole 300-epoch run: a 5-epoch warm-up from 1e-6 to
    5e-4 x 64/512, a cosine that ends at --min-lr 1e-5, mixup 0.8 / cutmix 1.0 with label smoothing
    0.1 carried by the mixed targets (so a soft-target loss)."""
    from timm.loss import SoftTargetCrossEntropy

    args = parse_args()
    args.rank, args.world_size, args.distributed = 0, 1, False
    model = nextvit.create_model("nextvit_tiny", num_classes=10)
    training = main_module.build_training(args, main_module.Run(torch.device("cpu"), None, None), model, 10)
    assert isinstance(training.criterion, SoftTargetCrossEntropy) and training.model_ema is None
    mixup = training.mixup_fn
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.label_smoothing, mixup.mode) == (0.8, 1.0, 0.1, "batch")

    def lr_at(epoch: int) -> float:
        training.lr_scheduler.step(epoch)
        return training.optimizer.param_groups[0]["lr"]

    peak = 5e-4 * 64 / 512
    assert lr_at(0) == pytest.approx(1e-6) and lr_at(5) == pytest.approx(peak, rel=1e-3)
    assert lr_at(150) < peak and lr_at(299) == pytest.approx(1e-5, rel=1e-2)
    assert all(lr_at(e) >= lr_at(e + 1) for e in range(5, 299, 7))


@pytest.mark.slow
def test_two_processes_over_gloo(shapes, tmp_path):
    out = tmp_path / "ddp"
    result = run_train(2, *FAST, "--data-path", shapes, "--epochs", "1", "--output-dir", out)
    assert "2 process(es)" in result.stdout and "global batch 16" in result.stdout
    assert len(read_log(out)) == 1 and (out / "checkpoint.pth").is_file()
    evaluated = run_train(2, *FAST, "--data-path", shapes, "--resume", out / "checkpoint.pth", "--eval")
    assert "test images" in evaluated.stdout


@pytest.mark.slow
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


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(shapes, tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHON=sys.executable, PORT=next_port(), OMP_NUM_THREADS="1")
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
    finally:  # kill the run (train.sh 1 runs main.py itself; pkill also finds a worker in a session of its own)
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


@pytest.mark.slow
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


def test_throughput_reports_a_plausible_rate(main_module, parse_args, capsys):
    """--throughout (the original's spelling of --throughput): one line, images/s of the folded model."""
    args = parse_args("--model", "nextvit_tiny", "--input-size", "48", "--batch-size", "4", "--device", "cpu",
                      "--throughout")  # fmt: skip
    assert main_module.main(args) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "images/s" in x]
    assert len(lines) == 1, lines
    match = re.fullmatch(r"nextvit_tiny: (\d+\.\d) images/s \(batch 4, 48x48, cpu, channels_last\)", lines[0])
    assert match, lines[0]
    assert 1.0 < float(match.group(1)) < 1e6  # 30 timed batches of 4 images on a CPU


@pytest.mark.slow
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


@pytest.mark.slow
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
    # one loader worker, as in the demo: the error raised in a worker still reads as the one line
    workers = ["--num-workers", "1"] if case == "corrupt" else []
    result = run_train(
        1, *FAST, *workers, "--data-path", data, "--epochs", "1", "--output-dir", tmp_path / "o", check=False
    )
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout, (result.stdout[-2000:], result.stderr[-2000:])
    if case == "corrupt":
        # train.sh 1 runs main.py itself: the message naming the file is the last line, with no traceback
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("data error: ") and expected in last, result.stderr[-2000:]
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        ok = run_train(
            1, *FAST, "--data-path", data, "--epochs", "1", "--output-dir", tmp_path / "o2", "--skip-corrupt"
        )
        assert "skipped 1 unreadable image(s)" in ok.stdout


@pytest.mark.slow
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


@pytest.mark.slow
def test_bad_flags_are_reported(shapes, tmp_path):
    result = run_train(1, *FAST, "--data-path", shapes, "--eval", check=False)
    assert result.returncode != 0 and "--eval needs --resume" in result.stderr
    result = run_train(1, *FAST, "--data-path", shapes, "--batch-size", "1000", "--output-dir", tmp_path, check=False)
    assert result.returncode != 0 and "--batch-size 1000" in result.stderr
    bad = subprocess.run(["bash", str(TRAIN_SH), "two"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage: bash train.sh NGPUS" in bad.stderr


@pytest.mark.slow
def test_bf16_on_cpu_with_model_ema(shapes, tmp_path):
    out = tmp_path / "ema"
    run_train(1, *FAST, "--data-path", shapes, "--epochs", "1", "--amp", "bf16", "--model-ema", "--output-dir", out)
    row = read_log(out)[0]
    assert isinstance(row["test_acc1_ema"], float)
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert state["model_ema"] is not None and state["args"]["amp"] == "bf16"
    refused = run_train(1, *FAST, "--data-path", shapes, "--amp", "fp16", "--output-dir", tmp_path / "x", check=False)
    assert refused.returncode != 0 and "--amp fp16 needs CUDA" in refused.stderr


@pytest.mark.slow
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


# --------------------------------------------------------------------------------------------
# GPU-path fixes that a CPU can check
# --------------------------------------------------------------------------------------------


def run_torchrun(nproc: int, script: str, *args, tmp_path: Path, timeout: int = 300) -> list[dict]:
    """Run `script` in `nproc` gloo processes; return the JSON line each printed."""
    path = tmp_path / "script.py"
    path.write_text(script)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(path)]
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


SCAN_SCRIPT = """\
import importlib.util, json, sys
import torch.distributed as dist
from torchvision import datasets
def load(name):  # a task-folder script, loaded by its path under the name its siblings import it by
    spec = importlib.util.spec_from_file_location(name, f"{sys.argv[1]}/{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
load("augment")  # imagefolder.py imports it
imagefolder = load("imagefolder")
decoded, readable = [], imagefolder._readable
imagefolder._readable = lambda path: decoded.append(path) or readable(path)
dist.init_process_group("gloo")
dataset = datasets.ImageFolder(sys.argv[2])
bad = imagefolder.drop_unreadable(dataset, workers=2)
rank = dist.get_rank()
with open(f"{sys.argv[3]}/rank{rank}.json", "w") as f:  # one file each: lines on a shared stdout can interleave
    json.dump(dict(rank=rank, decoded=decoded, bad=bad, kept=len(dataset)), f)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_skip_corrupt_decodes_each_image_once_across_processes(shapes, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shapes / "train", data)
    bad = data / "ring" / sorted(p.name for p in (data / "ring").iterdir())[3]
    bad.write_bytes(bad.read_bytes()[:100])
    images = sorted(str(p) for p in data.rglob("*.png"))
    out = tmp_path / "ranks"
    out.mkdir()
    run_torchrun(2, SCAN_SCRIPT, REPO / "classification", data, out, tmp_path=tmp_path)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    decoded = [path for r in ranks for path in r["decoded"]]
    assert sorted(decoded) == images  # every image decoded once, by one process
    assert all(r["bad"] == [str(bad)] and r["kept"] == len(images) - 1 for r in ranks)  # all know the whole list


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_eval_counts_padded_samples_once(import_script, world):
    """DistributedSampler pads 11 samples to 12 for 2 or 3 processes: the repeats are not counted."""
    engine = import_script("classification", "engine")
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(11, 6), torch.randint(0, 7, (11,)))
    model = torch.nn.Linear(6, 7)
    single = engine.evaluate(torch.utils.data.DataLoader(data, batch_size=3), model, torch.device("cpu"),
                             log_enabled=False)  # fmt: skip
    parts = []
    for rank in range(world):
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False)
        loader = torch.utils.data.DataLoader(data, batch_size=3, sampler=sampler)
        share = engine.distributed_eval_share(len(data), world, rank)
        parts.append(engine.evaluate(loader, model, torch.device("cpu"), log_enabled=False, count_first=share))
    assert sum(p["images"] for p in parts) == single["images"] == 11
    for key in ("acc1", "acc5", "loss"):
        combined = sum(p[key] * p["images"] for p in parts) / 11
        assert combined == pytest.approx(single[key], rel=1e-6), key  # float32 sums in other batches
    # what the sampler hands out, padding included
    assert sum(len(torch.utils.data.DistributedSampler(data, world, r, shuffle=False)) for r in range(world)) == 12


@pytest.mark.slow
def test_dist_eval_over_two_processes_matches_one(shapes, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    next((data / "val" / "square").iterdir()).unlink()  # 15 val images: the sampler pads one
    torch.manual_seed(0)
    model = nextvit.create_model("nextvit_tiny", num_classes=4)
    checkpoint = nextvit.save_checkpoint(model, tmp_path / "random.safetensors")
    flags = [*FAST, "--data-path", data, "--resume", checkpoint, "--eval"]
    results = []
    for nproc, extra in ((1, []), (2, ["--dist-eval"])):
        out = run_train(nproc, *flags, *extra).stdout.splitlines()
        (line,) = [x for x in out if x.startswith("* Acc@1")]
        assert any(x.startswith("Accuracy of the network on the 15 test images") for x in out), out[-5:]
        results.append([float(t) for t in line.split()[2:7:2]])  # Acc@1, Acc@5, loss
    (acc1, acc5, loss), (dist_acc1, dist_acc5, dist_loss) = results
    assert (acc1, acc5) == (dist_acc1, dist_acc5) and abs(loss - dist_loss) < 1e-3


def test_train_step_reads_back_from_the_device_only_at_log_steps(import_script, monkeypatch):
    """No per-step loss.item() (nor a synchronize): losses are summed on the device and read every print_freq."""
    engine = import_script("classification", "engine")
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(40, 6), torch.randint(0, 3, (40,)))
    loader = torch.utils.data.DataLoader(data, batch_size=2)  # 20 steps
    model = torch.nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reads = []
    for name in ("item", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, _f=original, _n=name: reads.append(_n) or _f(self))
    stats = engine.train_one_epoch(model, torch.nn.CrossEntropyLoss(), loader, optimizer, torch.device("cpu"), 0,
                                   print_freq=10, log_enabled=False)  # fmt: skip
    monkeypatch.undo()
    # steps 10 and 20 (one read each); the DataLoader draws its seed with a CPU tensor's .item()
    assert reads.count("tolist") == 2 and reads.count("item") <= 1, reads
    assert stats["loss"] > 0


def test_train_step_names_the_first_non_finite_step(import_script):
    engine = import_script("classification", "engine")
    data = torch.utils.data.TensorDataset(torch.randn(12, 6), torch.randint(0, 3, (12,)))
    loader = torch.utils.data.DataLoader(data, batch_size=2)  # 6 steps
    model = torch.nn.Linear(6, 3)
    calls = []

    def criterion(output, target):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(output, target)
        return loss * float("nan") if len(calls) == 3 else loss  # step 2

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(engine.NonFiniteLossError, match="at epoch 4, step 2"):
        engine.train_one_epoch(model, criterion, loader, optimizer, torch.device("cpu"), 4, print_freq=5,
                               log_enabled=False)  # fmt: skip


def test_cudnn_autotuning_on_cuda(main_module, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    main_module.configure_backends(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    main_module.configure_backends(torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark is True
