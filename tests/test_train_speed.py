"""Training at the hardware's speed: channels_last, torch.compile, the loader, data-wait and speed lines,
checkpoints that do not depend on either, and the training benchmark (its CPU path; the CUDA one on a GPU)."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_train

import nextvit
from nextvit.synthetic import make_classification_dataset

REPO = Path(__file__).resolve().parents[1]
FAST = (
    "--model nextvit_tiny --input-size 48 --batch-size 8 --num-workers 0 --print-freq 4 "
    "--mixup 0 --cutmix 0 --reprob 0 --aa none"
).split()


@pytest.fixture(scope="module")
def main_module(import_script):
    return import_script("classification", "main")


@pytest.fixture(scope="module")
def engine(import_script):
    return import_script("classification", "engine")


@pytest.fixture(scope="module")
def bench(import_script):
    return import_script("classification", "benchmark_train")


def parse(main_module, *argv: str) -> argparse.Namespace:
    args = main_module.get_args_parser().parse_args(list(argv))
    args.rank, args.world_size, args.distributed = 0, 1, False
    return args


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_classification_dataset(
        tmp_path_factory.mktemp("shapes"), num_classes=4, train_per_class=8, val_per_class=2, size=48, seed=0
    )


# --------------------------------------------------------------------------------------------
# flags and the loader
# --------------------------------------------------------------------------------------------


def test_workers_is_num_workers_and_the_loader_keeps_a_gpu_fed(main_module):
    assert parse(main_module, "--workers", "3").num_workers == 3
    assert parse(main_module, "--num-workers", "4").num_workers == 4
    assert parse(main_module).num_workers == 10  # the original's default
    cpu, cuda = main_module.Run(torch.device("cpu"), None, None), main_module.Run(torch.device("cuda", 0), None, None)
    args = parse(main_module, "--workers", "3", "--prefetch-factor", "4")
    assert main_module.loader_options(args, cuda) == dict(
        num_workers=3, pin_memory=True, persistent_workers=True, prefetch_factor=4
    )
    assert main_module.loader_options(args, cpu)["pin_memory"] is False  # pinning only helps copies to a GPU
    assert main_module.loader_options(parse(main_module, "--no-pin-mem"), cuda)["pin_memory"] is False
    # no worker processes: torch refuses prefetch_factor and persistent_workers then
    assert main_module.loader_options(parse(main_module, "--workers", "0"), cuda) == dict(
        num_workers=0, pin_memory=True
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prefetch-factor", "0"], "--prefetch-factor must be at least 1 (got 0)"),
        (["--num-workers", "-1"], "--num-workers must be 0 or more (got -1)"),
    ],
)
def test_bad_loader_flags_are_one_line_errors(main_module, argv, message):
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")):
        main_module.check_speed_flags(parse(main_module, *argv))


def test_channels_last_default_follows_the_device_and_the_help_says_why(main_module, capsys):
    resolve = main_module.resolve_channels_last
    assert resolve(None, torch.device("cuda", 0)) is True
    assert resolve(None, torch.device("cpu")) is main_module.CHANNELS_LAST_DEFAULT["cpu"]
    assert resolve(False, torch.device("cuda", 0)) is False and resolve(True, torch.device("cpu")) is True
    assert parse(main_module, "--channels-last").channels_last is True
    assert parse(main_module, "--no-channels-last").channels_last is False
    assert parse(main_module).channels_last is None  # resolved by device in setup()
    with pytest.raises(SystemExit):
        main_module.get_args_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1.6x faster than NCHW on one H200" in text and "--compile-mode" in text and "--workers" in text
    for mode in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        assert parse(main_module, "--compile", "--compile-mode", mode).compile_mode == mode


def test_adamw_is_fused_on_cuda_only(main_module):
    args = parse(main_module)
    assert main_module.optimizer_options(args, torch.device("cuda", 0)) == dict(
        eps=1e-8, betas=(0.9, 0.999), fused=True
    )
    assert "fused" not in main_module.optimizer_options(args, torch.device("cpu"))
    assert main_module.optimizer_options(parse(main_module, "--opt", "sgd"), torch.device("cuda", 0)) == {}


# --------------------------------------------------------------------------------------------
# checkpoints: the same file whatever the layout and compilation
# --------------------------------------------------------------------------------------------


def test_compiled_model_prefixes_are_stripped_by_name(main_module):
    strip = main_module.strip_compiled_prefix
    value = torch.zeros(1)
    state = {
        "_orig_mod.stem.0.conv.weight": value,
        "module._orig_mod.head.fc.bias": value,
        "_orig_mod.module.norm.weight": value,
        "module.features.0.weight": value,  # a DDP prefix alone is read_checkpoint's to strip
        "stages.0.blocks.0.mlp.fc1.weight": value,
    }
    assert list(strip(state)) == [
        "stem.0.conv.weight",
        "head.fc.bias",
        "norm.weight",
        "module.features.0.weight",
        "stages.0.blocks.0.mlp.fc1.weight",
    ]


def test_weights_saved_from_a_compiled_model_load(main_module, tmp_path):
    torch.manual_seed(0)
    source = nextvit.create_model("nextvit_tiny", num_classes=4)
    compiled = torch.compile(source)  # compiles lazily: nothing runs here
    state = compiled.state_dict()
    assert all(k.startswith("_orig_mod.") for k in state)
    torch.save({"model": state}, tmp_path / "compiled.pth")
    target = nextvit.create_model("nextvit_tiny", num_classes=4)
    main_module.load_weights(target, str(tmp_path / "compiled.pth"), parse(main_module), finetune=False)
    for key, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], tensor), key


def one_training_step(main_module, *argv: str):
    """A Training of nextvit_tiny on the CPU after one optimizer step (so AdamW has its state)."""
    args = parse(main_module, "--model", "nextvit_tiny", "--mixup", "0", "--cutmix", "0", *argv)
    args.channels_last = bool(args.channels_last)
    run = main_module.Run(torch.device("cpu"), None, None)
    torch.manual_seed(0)
    model = main_module.to_memory_format(main_module.build_model(args, 4), args.channels_last)
    training = main_module.build_training(args, run, model, 4)
    x = torch.randn(2, 3, 32, 32)
    x = x.contiguous(memory_format=torch.channels_last) if args.channels_last else x
    training.criterion(training.model(x), torch.tensor([0, 3])).backward()
    training.optimizer.step()
    return args, training


def test_checkpoint_of_a_channels_last_compiled_run_is_plain_nchw_and_resumes_either_way(main_module, tmp_path):
    args, training = one_training_step(main_module, "--channels-last", "--compile", "--model-ema")
    assert type(training.train_model).__name__ == "OptimizedModule" and training.model is training.model_without_ddp
    weight = training.model_without_ddp.stem[0].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    state = training.checkpoint(args, epoch=0, rng=[main_module.rng_state()])
    path = tmp_path / "checkpoint.pth"
    torch.save(state, path)
    for part in ("model", "model_ema"):
        assert not any("_orig_mod" in k for k in state[part]), part
        assert all(t.is_contiguous() for t in state[part].values()), part
    assert all(t.is_contiguous() for s in state["optimizer"]["state"].values() for t in s.values())
    # resumed by a channels_last run (the optimizer state takes its parameters' layout) and by an NCHW one
    for argv in (["--channels-last", "--compile", "--model-ema"], ["--no-channels-last", "--model-ema"]):
        resumed_args, resumed = one_training_step(main_module, *argv)
        resumed.optimizer.state.clear()
        main_module.resume_training(resumed_args, resumed, str(path))
        assert resumed.start_epoch == 1
        for key, tensor in training.model_without_ddp.state_dict().items():
            assert torch.equal(resumed.model_without_ddp.state_dict()[key], tensor), key
        for param, saved in zip(resumed.model_without_ddp.parameters(), training.model_without_ddp.parameters()):
            moments = resumed.optimizer.state[param]
            assert moments["exp_avg"].stride() == param.stride(), argv
            assert torch.equal(moments["exp_avg"], training.optimizer.state[saved]["exp_avg"])


def test_random_state_round_trips_through_a_weights_only_checkpoint(main_module, tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.normal()  # numpy keeps a cached gaussian: saved too
    saved = main_module.rng_state()

    def draws():
        return (
            torch.rand(3).tolist(),
            np.random.rand(3).tolist(),
            np.random.normal(),
            [random.random() for _ in range(3)],
        )

    expected = draws()
    torch.save({"rng": [saved]}, tmp_path / "rng.pth")
    loaded = torch.load(tmp_path / "rng.pth", weights_only=True)["rng"][0]
    draws()  # move every generator on
    main_module.set_rng_state(loaded)
    assert draws() == expected


# --------------------------------------------------------------------------------------------
# the epoch: channels_last, data wait, first step, speed lines
# --------------------------------------------------------------------------------------------


def train_epoch(engine, channels_last: bool, **kwargs) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = nextvit.create_model("nextvit_tiny", num_classes=3)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32, generator=gen), torch.tensor([0, 1, 2, 0] * 2))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # (Adam's first steps amplify float noise)
    stats = engine.train_one_epoch(model, torch.nn.CrossEntropyLoss(), loader, optimizer, torch.device("cpu"), 0,
                                   log_enabled=False, channels_last=channels_last, **kwargs)  # fmt: skip
    return model, stats


def test_channels_last_epoch_matches_nchw(engine):
    nchw, nchw_stats = train_epoch(engine, channels_last=False)
    cl, cl_stats = train_epoch(engine, channels_last=True)
    assert cl.stem[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert cl_stats["loss"] == pytest.approx(nchw_stats["loss"], rel=1e-4)
    for (name, a), b in zip(nchw.state_dict().items(), cl.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    for stats in (nchw_stats, cl_stats):
        assert 0.0 <= stats["data_wait"] < 1.0 and stats["steps"] == 2
        assert stats["images_per_s_per_process"] == stats["images_per_s"] > 0  # one process
        assert 0 < stats["first_step_time"] < stats["time"]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2] * 2)), batch_size=4
    )
    plain = engine.evaluate(loader, nchw, torch.device("cpu"), log_enabled=False)
    converted = engine.evaluate(loader, nchw.to(memory_format=torch.channels_last), torch.device("cpu"),
                                log_enabled=False, channels_last=True)  # fmt: skip
    assert converted["acc1"] == plain["acc1"] and converted["loss"] == pytest.approx(plain["loss"], rel=1e-4)


def test_data_wait_is_the_time_blocked_on_the_loader(engine, monkeypatch):
    """A fake clock: each batch takes 3 units to arrive and each step 1, so 3/4 of the epoch is waiting."""
    clock = [0.0]
    monkeypatch.setattr(engine.time, "perf_counter", lambda: clock[0])

    class SlowLoader:
        def __len__(self):
            return 5

        def __iter__(self):
            for _ in range(5):
                clock[0] += 3.0
                yield torch.randn(2, 6), torch.tensor([0, 1])

    def criterion(output, target):
        clock[0] += 1.0
        return torch.nn.functional.cross_entropy(output, target)

    model = torch.nn.Linear(6, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = engine.train_one_epoch(model, criterion, SlowLoader(), optimizer, torch.device("cpu"), 0, log_enabled=False)
    assert stats["data_wait"] == pytest.approx(0.75)
    assert stats["time"] == pytest.approx(20.0) and stats["first_step_time"] == pytest.approx(1.0)
    assert stats["images_per_s_per_process"] == pytest.approx(10 / 20.0)


def test_unwrap_model_finds_the_plain_module_under_compile(engine):
    model = torch.nn.Linear(2, 2)
    assert engine.unwrap_model(torch.compile(model)) is model and engine.unwrap_model(model) is model


def test_speed_lines_first_step_once_and_one_data_wait_warning(main_module, monkeypatch, capsys):
    monkeypatch.setattr(main_module, "max_memory_mb", lambda device: 7021.4)
    args = parse(main_module, "--compile", "--workers", "6")
    report = main_module.SpeedReport(args, main_module.Run(torch.device("cuda", 0), None, None))
    stats = dict(time=50.0, first_step_time=40.5, steps=20, images_per_s_per_process=12.34, data_wait=0.31)
    report.epoch_done(0, stats)
    report.epoch_done(1, dict(stats, first_step_time=0.5, data_wait=0.45))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines == [
        "epoch 0 trained in 50.0 s: 12.3 images/s per process, data wait 31.0% of the epoch, peak GPU memory 7021 MB",
        "first training step 40.5 s, compilation (torch.compile) included; later steps 0.500 s each",
        "epoch 1 trained in 50.0 s: 12.3 images/s per process, data wait 45.0% of the epoch, peak GPU memory 7021 MB",
    ]
    assert err.count("warning:") == 1 and "(--num-workers, now 6)" in err and "31%" in err
    cpu = main_module.SpeedReport(parse(main_module), main_module.Run(torch.device("cpu"), None, None))
    cpu.epoch_done(0, dict(stats, data_wait=0.05))
    assert capsys.readouterr().out.splitlines() == [
        "epoch 0 trained in 50.0 s: 12.3 images/s per process, data wait 5.0% of the epoch"
    ]


def test_slow_first_steps_are_announced_on_cuda_and_with_compile(main_module):
    notice = main_module.slow_first_steps_notice
    assert notice(parse(main_module), torch.device("cpu")) is None
    assert "cudnn.benchmark" in notice(parse(main_module), torch.device("cuda", 0))
    both = notice(parse(main_module, "--compile", "--compile-mode", "max-autotune"), torch.device("cuda", 0))
    assert "cudnn.benchmark" in both and "torch.compile, mode max-autotune" in both and "tens of seconds" in both
    assert main_module.uses_cudagraphs(parse(main_module, "--compile", "--compile-mode", "reduce-overhead"),
                                       torch.device("cuda", 0))  # fmt: skip
    assert not main_module.uses_cudagraphs(parse(main_module, "--compile"), torch.device("cuda", 0))
    assert not main_module.uses_cudagraphs(parse(main_module, "--compile", "--compile-mode", "reduce-overhead"),
                                           torch.device("cpu"))  # fmt: skip


# --------------------------------------------------------------------------------------------
# training runs (processes)
# --------------------------------------------------------------------------------------------


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    for index, moments in state["optimizer"]["state"].items():
        tensors.update({f"optimizer.{index}.{k}": v for k, v in moments.items()})
    return tensors


@pytest.mark.slow
def test_compiled_channels_last_training_resumes_exactly(shapes, tmp_path):
    """Two epochs straight, and one epoch then a resumed one, with --compile --channels-last: the same weights and
    optimizer state to the bit (the random state is in the checkpoint); the checkpoint also resumes eagerly in NCHW."""
    speed = ["--compile", "--channels-last", "--drop-path", "0.1", "--input-size", "64"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    first = run_train(1, *FAST, *speed, "--data-path", shapes, "--epochs", "2", "--output-dir", straight)
    assert "channels_last, compiled" in first.stdout
    assert first.stdout.count("compilation (torch.compile) included") == 1
    assert "compile the model (torch.compile, mode default)" in first.stdout
    assert "images/s per process, data wait" in first.stdout
    run_train(1, *FAST, *speed, "--data-path", shapes, "--epochs", "1", "--output-dir", split)
    epoch0 = torch.load(split / "checkpoint.pth", weights_only=True)
    assert not any("_orig_mod" in k for k in epoch0["model"]) and all(
        t.is_contiguous() for t in epoch0["model"].values()
    )
    (split / "epoch0.pth").write_bytes((split / "checkpoint.pth").read_bytes())
    resumed = run_train(
        1, *FAST, *speed, "--data-path", shapes, "--epochs", "2", "--output-dir", split, "--resume", "auto"
    )
    assert "from epoch 1" in resumed.stdout
    a, b = checkpoint_tensors(straight / "checkpoint.pth"), checkpoint_tensors(split / "checkpoint.pth")
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == [], differing[:5]
    rows = [json.loads(line) for line in (split / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(0 <= r["data_wait"] < 1 and r["images_per_s_per_process"] > 0 for r in rows)
    # the compiled run's checkpoint, resumed without --compile in NCHW
    eager = tmp_path / "eager"
    eager.mkdir()
    result = run_train(1, *FAST, "--no-channels-last", "--drop-path", "0.1", "--input-size", "64",
                       "--data-path", shapes, "--epochs", "2", "--output-dir", eager,
                       "--resume", split / "epoch0.pth")  # fmt: skip
    model_line = next(line for line in result.stdout.splitlines() if line.startswith("model nextvit_tiny"))
    assert "from epoch 1" in result.stdout and model_line.endswith("1 process(es), NCHW")
    assert torch.load(eager / "checkpoint.pth", weights_only=True)["epoch"] == 1


# --------------------------------------------------------------------------------------------
# benchmark_train.py
# --------------------------------------------------------------------------------------------


def test_benchmark_modes(bench):
    assert bench.parse_mode("fp16-cl-compile") == bench.Mode("fp16-cl-compile", "fp16", True, True)
    assert bench.parse_mode("bf16") == bench.Mode("bf16", "bf16", False, False)
    assert bench.parse_mode("fp32-compile").dtype is None and bench.parse_mode("bf16-cl").dtype is torch.bfloat16
    for bad in ("fp8", "fp16-nhwc", "fp16-cl-cl", "cl"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected fp32, fp16 or bf16"):
            bench.parse_mode(bad)


def test_benchmark_cpu_defaults_are_the_original_ones(bench, capsys):
    args = bench.parse_args([])
    assert (args.device, args.batch_size, args.sizes, args.steps, args.warmup) == ("cpu", 32, [64, 224], 10, 2)
    assert [m.name for m in args.modes] == ["fp32"] and args.models == ["ours", "timm"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--modes", "fp16"])  # fp16 autocast is CUDA's
    assert "fp16 autocast needs CUDA" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench.parse_args(["--device", "cuda"])
        assert "no CUDA device is visible" in capsys.readouterr().err


def test_benchmark_rows_lines_and_speedups(bench):
    args = argparse.Namespace(steps=3, warmup=2)
    fp16 = bench.make_row(224, bench.parse_mode("fp16"), 128, {"ours": [0.1, 0.08, 0.2], "timm": [0.064] * 3,
                          "resnet50": [0.04] * 3}, {"ours": 7000.4, "timm": 7100, "resnet50": 5800},
                          {"ours": 33.1, "timm": 0.1, "resnet50": 4.6}, args)  # fmt: skip
    assert fp16["images_per_s"] == {"ours": 1280.0, "timm": 2000.0, "resnet50": 3200.0}  # medians
    assert fp16["ratio_ours_timm"] == 0.64 and fp16["ratio_to_timm"] == {"ours": 0.64, "resnet50": 1.6}
    cl = bench.make_row(224, bench.parse_mode("fp16-cl"), 128, {"ours": [0.05] * 3, "timm": [0.05] * 3,
                        "resnet50": [0.04] * 3}, {"ours": 7000, "timm": 7100, "resnet50": 5800}, {}, args)  # fmt: skip
    assert bench.speedups([fp16, cl]) == {"224x224, against fp16": {"fp16-cl": {"ours": 2.0, "timm": 1.28,
                                                                               "resnet50": 1.0}}}  # fmt: skip
    assert bench.format_row(cl, with_mode=True) == (
        "224x224 fp16-cl: ours 2560.0 img/s, timm 2560.0 img/s, resnet50 3200.0 img/s, ours/timm 1.000, "
        "resnet50/timm 1.250; peak memory ours 7000 MB, timm 7100 MB, resnet50 5800 MB"
    )
    # the CPU default's line, as before modes existed
    cpu = bench.make_row(64, bench.parse_mode("fp32"), 32, {"ours": [32 / 27.23], "timm": [32 / 26.55]},
                         {"ours": 2083, "timm": 2083}, {}, args)  # fmt: skip
    assert bench.format_row(cpu, with_mode=False) == (
        "64x64: ours 27.2 img/s, timm 26.6 img/s, ours/timm 1.026; peak memory ours 2083 MB, timm 2083 MB"
    )


def test_benchmark_stepper_in_a_cpu_mode(bench):
    model = bench.build("ours", "nextvit_tiny")
    stepper = bench.Stepper(model, 2, 32, "cpu", bench.parse_mode("bf16-cl"))
    assert stepper.x.is_contiguous(memory_format=torch.channels_last)
    assert stepper.model.stem[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    before = stepper.model.stem[0].conv.weight.detach().clone()
    assert stepper.warm_up(1) > 0 and stepper.times == []
    stepper.step()
    stepper.step()
    assert len(stepper.times) == 2 and all(t > 0 for t in stepper.times)
    assert not torch.equal(before, stepper.model.stem[0].conv.weight)
    with pytest.raises(SystemExit, match="fp16 autocast needs CUDA"):
        bench.Stepper(bench.build("ours", "nextvit_tiny"), 2, 32, "cpu", bench.parse_mode("fp16"))


@pytest.mark.slow
def test_benchmark_cpu_run_writes_rows_per_mode(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "classification" / "benchmark_train.py"), "--model", "nextvit_tiny", "--sizes",
         "32", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--modes", "fp32", "fp32-cl", "--peers",
         "resnet18", "--output", out],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "# nextvit_tiny training steps (forward + backward + AdamW), batch 2, modes fp32 fp32-cl"
    )
    assert lines[1] == "# timm has no nextvit_tiny: ours and the peers only, without the ratio to timm's port"
    assert lines[2].startswith("32x32 fp32: ours ") and lines[3].startswith("32x32 fp32-cl: ours ")
    assert " img/s, resnet18 " in lines[2] and "ours/timm" not in lines[2]
    assert lines[4].startswith("ours, 32x32, against fp32: fp32-cl ") and lines[5] == f"wrote {out}"
    data = json.loads(out.read_text())
    assert [r["mode"] for r in data["rows"]] == ["fp32", "fp32-cl"] and data["device"] == "cpu"
    for row in data["rows"]:
        assert set(row["images_per_s"]) == set(row["peak_memory_mb"]) == {"ours", "resnet18"}
        assert all(v > 0 for v in row["peak_memory_mb"].values()) and row["ratio_ours_timm"] is None
    assert "cpu_isa" in data["machine"] and data["machine"]["batch"] == 2


# --------------------------------------------------------------------------------------------
# on a GPU (pytest -m cuda; scripts/gpu_check.sh)
# --------------------------------------------------------------------------------------------


@pytest.mark.cuda
def test_cuda_epoch_channels_last_fp16_matches_nchw(engine):
    device = torch.device("cuda")
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = nextvit.create_model("nextvit_tiny", num_classes=3).to(device)
        model = model.to(memory_format=torch.channels_last) if channels_last else model
        gen = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(16, 3, 64, 64, generator=gen), torch.tensor([0, 1, 2, 0] * 4))
        loader = torch.utils.data.DataLoader(data, batch_size=8, pin_memory=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        stats = engine.train_one_epoch(model, torch.nn.CrossEntropyLoss(), loader, optimizer, device, 0,
                                       torch.amp.GradScaler("cuda"), torch.float16, 5.0, log_enabled=False,
                                       channels_last=channels_last)  # fmt: skip
        results.append((stats, model.head.fc.weight.detach().float().cpu()))
    (nchw, nchw_head), (cl, cl_head) = results
    assert cl["loss"] == pytest.approx(nchw["loss"], rel=2e-2) and torch.isfinite(cl_head).all()
    assert torch.allclose(nchw_head, cl_head, atol=1e-3)
    assert 0 <= cl["data_wait"] < 1 and cl["first_step_time"] > 0


@pytest.mark.cuda
def test_cuda_benchmark_train_rows(bench, tmp_path):
    out = tmp_path / "bench.json"
    argv = "--device cuda --model nextvit_small --sizes 64 --batch-size 4 --steps 2 --warmup 1 --modes fp16 bf16-cl"
    assert bench.main([*argv.split(), "--peers", "resnet18", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["mode"] for r in data["rows"]] == ["fp16", "bf16-cl"] and data["machine"]["gpu"]
    for row in data["rows"]:
        assert set(row["images_per_s"]) == {"ours", "timm", "resnet18"}
        assert all(v > 0 for v in row["peak_memory_mb"].values()) and row["ratio_to_timm"]["ours"] > 0
    assert "64x64, against fp16" in data["speedups"]


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_train_sh_epoch_with_gpu_defaults(shapes, tmp_path):
    """train.sh 1 on CUDA: fp16 AMP, fused AdamW, channels_last by default, pinned memory, the speed lines."""
    out = tmp_path / "run"
    result = run_train(1, *FAST, "--num-workers", "2", "--data-path", shapes, "--epochs", "1", "--output-dir", out)
    assert "device cuda:0" in result.stdout and "channels_last" in result.stdout
    assert "autotune cuDNN's convolutions" in result.stdout and "cuDNN autotuning included" in result.stdout
    assert "peak GPU memory" in result.stdout
    row = json.loads((out / "log.txt").read_text().splitlines()[0])
    assert row["max_memory_mb"] > 0 and 0 <= row["data_wait"] < 1
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert all(t.is_contiguous() for t in state["model"].values()) and state["args"]["channels_last"] is True
