"""Reading, converting and writing Next-ViT checkpoints.

Three layouts are understood, and told apart by their key names:

* ``bytedance``: the original release (`nextvit_small_in1k_224.pth` ...): a dict with a ``model``
  key (or a bare state dict) with keys ``stem.*``, ``features.N.*``, ``norm.*``, ``proj_head.0.*``
  and MLP layers named ``conv1``/``conv2``;
* ``timm``: timm's ``nextvit_*`` files (``.safetensors`` or ``.pth``): ``stem.*``,
  ``stages.S.blocks.B.*``, ``norm.*``, ``head.fc.*``;
* ``nextvit``: this package's own files, in timm's key layout plus metadata (variant, whether the
  BatchNorms are folded).

Keys are renamed by rules on their names (block N of ``features`` is block B of stage S given the
model's depths), then matched against the model by name and shape; nothing is ever paired by
position. Files are read without unpickling arbitrary objects (``weights_only=True``, or
safetensors).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .files import atomic_write

__all__ = [
    "CheckpointError",
    "LoadReport",
    "read_checkpoint",
    "detect_layout",
    "variant_of_state",
    "TRAINING_ARGS",
    "bytedance_to_timm",
    "timm_to_bytedance",
    "load_checkpoint",
    "save_checkpoint",
    "save_bytedance_checkpoint",
]

_SAFETENSORS_SUFFIXES = (".safetensors",)
_WRAPPER_KEYS = ("model", "state_dict", "model_state", "module")
_HEAD_PREFIXES = ("head.fc.",)
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)
# what a training checkpoint of classification/main.py says of its model (its `args`), kept by
# `read_checkpoint` in meta["training_args"] as JSON: the loader reads the variant and size there
TRAINING_ARGS = ("model", "input_size", "crop_pct", "kv_pool")


class CheckpointError(ValueError):
    """A checkpoint could not be read, or does not fit the model it is loaded into."""


@dataclass
class LoadReport:
    """What `load_checkpoint` did: the source layout and every key that did not load."""

    path: str
    layout: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped_head: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        lines = [f"{self.path}: {self.layout} layout, {self.loaded} tensors loaded"]
        if self.dropped_head:
            lines.append(f"  classifier dropped (class count differs): {', '.join(self.dropped_head)}")
        lines += _describe_mismatch(self.missing, self.unexpected, self.mismatched)
        return "\n".join(lines)


def _describe_mismatch(missing, unexpected, mismatched, limit: int = 12) -> list[str]:
    def clip(keys):
        keys = list(keys)
        text = ", ".join(keys[:limit])
        return text + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")

    lines = []
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}): {clip(missing)}")
    if unexpected:
        lines.append(f"  unexpected in the checkpoint ({len(unexpected)}): {clip(unexpected)}")
    if mismatched:
        shown = [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched]
        lines.append(f"  shape mismatch ({len(mismatched)}): {clip(shown)}")
    return lines


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a state dict and its metadata from a `.safetensors` or torch file, safely.

    Unwraps ``{"model": ...}`` / ``{"state_dict": ...}`` containers and a DDP ``module.`` prefix.
    The metadata is this package's (`save_checkpoint`), plus, for a training checkpoint of
    classification/main.py, the `TRAINING_ARGS` of its `args` as JSON in ``meta["training_args"]``.
    Raises `CheckpointError` naming the file for a missing, truncated or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix in _SAFETENSORS_SUFFIXES:
        return _read_safetensors(path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        found = "an empty file" if not head else f"a file starting with {head!r}"
        raise CheckpointError(
            f"could not read checkpoint {path}: not a torch file (found {found}, neither a zip archive "
            "nor a pickle; .safetensors files need that suffix)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects that a weights-only load refuses to unpickle ({err}). "
            "Re-save it as a plain state dict or as .safetensors."
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, IndexError, TypeError, UnicodeError) as err:
        raise CheckpointError(f"could not read checkpoint {path}: truncated or not a torch file ({err})") from err
    meta: dict[str, str] = {}
    if isinstance(obj, Mapping):
        if isinstance(obj.get("nextvit_meta"), Mapping):
            meta = {str(k): str(v) for k, v in obj["nextvit_meta"].items()}
        if isinstance(obj.get("args"), Mapping):
            args = {k: obj["args"][k] for k in TRAINING_ARGS if k in obj["args"]}
            meta["training_args"] = json.dumps(args, default=str)
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key[len("module.") :] if key.startswith("module.") else key] = value
    return state, meta


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"could not read checkpoint {path}: truncated or not safetensors ({err})") from err
    return state, meta


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------

_BD_BLOCK = re.compile(r"^features\.(\d+)\.(.*)$")
_TIMM_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$")
_MLP_RENAMES = ((".mlp.conv1.", ".mlp.fc1."), (".mlp.conv2.", ".mlp.fc2."))


def detect_layout(state: Mapping[str, torch.Tensor], meta: Mapping[str, str] | None = None) -> str:
    """'bytedance', 'timm' or 'nextvit' (ours: timm's keys plus our metadata)."""
    if meta and meta.get("format") == "nextvit":
        return "nextvit"
    if any(_BD_BLOCK.match(k) for k in state):
        return "bytedance"
    if any(_TIMM_BLOCK.match(k) for k in state):
        return "timm"
    sample = ", ".join(list(state)[:5])
    raise CheckpointError(
        f"not a Next-ViT checkpoint: no 'features.N.*' or 'stages.S.blocks.B.*' keys (first keys: {sample})"
    )


def _bytedance_depth_count(state: Mapping[str, torch.Tensor]) -> int:
    return 1 + max(int(m.group(1)) for k in state if (m := _BD_BLOCK.match(k)))


def bytedance_to_timm(state: Mapping[str, torch.Tensor], depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Rename ByteDance keys to timm's (and ours), given the stage depths of the model."""
    total = sum(depths)
    found = _bytedance_depth_count(state)
    if found != total:
        raise CheckpointError(
            f"the checkpoint has {found} blocks but the model has {total} (depths {depths}): "
            f"it is another Next-ViT variant ({_variant_for_blocks(found)})"
        )
    starts = [sum(depths[:i]) for i in range(len(depths))]
    out = {}
    for key, value in state.items():
        if m := _BD_BLOCK.match(key):
            index, rest = int(m.group(1)), m.group(2)
            stage = max(i for i, s in enumerate(starts) if s <= index)
            key = f"stages.{stage}.blocks.{index - starts[stage]}.{rest}"
            for old, new in _MLP_RENAMES:
                key = key.replace(old, new)
        elif key.startswith("proj_head.0."):
            key = "head.fc." + key[len("proj_head.0.") :]
        out[key] = value
    return out


def timm_to_bytedance(state: Mapping[str, torch.Tensor], depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The inverse of `bytedance_to_timm`: timm/our keys to the original release's."""
    starts = [sum(depths[:i]) for i in range(len(depths))]
    out = {}
    for key, value in state.items():
        if m := _TIMM_BLOCK.match(key):
            stage, block, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            key = f"features.{starts[stage] + block}.{rest}"
            for new, old in _MLP_RENAMES:
                key = key.replace(old, new)
        elif key.startswith("head.fc."):
            key = "proj_head.0." + key[len("head.fc.") :]
        out[key] = value
    return out


def variant_of_state(state: Mapping[str, torch.Tensor]) -> str | None:
    """The variant whose stage depths the weights have (any layout), or None when none has them.

    Depths tell S (3, 4, 10, 3), B (3, 4, 20, 3), L (3, 4, 30, 3) and tiny (1, 1, 5, 1) apart; the
    original layout numbers its blocks across stages, so there only their total is compared."""
    from .model import VARIANTS

    stage_blocks: dict[int, set[int]] = {}
    for key in state:
        if m := _TIMM_BLOCK.match(key):
            stage_blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if stage_blocks:
        depths = tuple(len(stage_blocks.get(s, ())) for s in range(max(stage_blocks) + 1))
        names = [n for n, cfg in VARIANTS.items() if tuple(cfg["depths"]) == depths]
    elif any(_BD_BLOCK.match(k) for k in state):
        total = _bytedance_depth_count(state)
        names = [n for n, cfg in VARIANTS.items() if sum(cfg["depths"]) == total]
    else:
        names = []
    return names[0] if len(names) == 1 else None


def _variant_for_blocks(blocks: int) -> str:
    from .model import VARIANTS

    names = [n for n, cfg in VARIANTS.items() if sum(cfg["depths"]) == blocks]
    return " or ".join(names) if names else "unknown variant"


def checkpoint_is_folded(state: Mapping[str, torch.Tensor], meta: Mapping[str, str] | None = None) -> bool:
    """A folded checkpoint has no BatchNorm statistics (and our writer says so in its metadata)."""
    if meta and "folded" in meta:
        return meta["folded"] in ("1", "true", "True")
    return not any(k.endswith("running_var") for k in state)


# --------------------------------------------------------------------------------------------
# Loading into a model
# --------------------------------------------------------------------------------------------


def load_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    strict: bool = True,
    drop_head: bool | None = None,
    meta: Mapping[str, str] | None = None,
    where: str | None = None,
) -> LoadReport:
    """Load a ByteDance, timm or nextvit checkpoint into a `NextViT`, matching keys by name and shape.

    Args:
        checkpoint: a file path, or a state dict already read (`read_checkpoint`), then with its
            `meta` and, for messages, `where` it came from, so that a file is read once.
        strict: raise `CheckpointError` listing the missing, unexpected and mis-shaped keys when
            anything does not match; with False, load what matches and report the rest.
        drop_head: leave the model's classifier as it is instead of loading it. None (default)
            drops it only when its class count differs from the checkpoint's (fine-tuning).
    """
    if isinstance(checkpoint, Mapping):
        state, meta, where = dict(checkpoint), dict(meta or {}), where or "<state dict>"
    else:
        state, meta = read_checkpoint(checkpoint)
        where = str(checkpoint)
    layout = detect_layout(state, meta)
    if layout == "bytedance":
        try:
            state = bytedance_to_timm(state, tuple(model.depths))
        except CheckpointError as err:
            raise CheckpointError(f"{where}: {err}") from None
    folded_ckpt = checkpoint_is_folded(state, meta)
    folded_model = bool(getattr(model, "is_folded", False))
    if folded_ckpt != folded_model:
        hint = (
            "fold the model first (nextvit.fold_batchnorm(model, inplace=True)), or build it with "
            "nextvit.create_model(..., checkpoint_path=...), which does so"
            if folded_ckpt
            else "load it into an unfolded model, then fold"
        )
        raise CheckpointError(
            f"{where} holds a {'folded' if folded_ckpt else 'unfolded'} model but the model is "
            f"{'folded' if folded_model else 'unfolded'}: {hint}"
        )

    target = model.state_dict()
    report = LoadReport(path=where, layout=layout)
    if drop_head is None:
        drop_head = any(
            k in state and k in target and state[k].shape != target[k].shape for k in ("head.fc.weight", "head.fc.bias")
        )
    if drop_head:
        report.dropped_head = sorted(k for k in state if k.startswith(_HEAD_PREFIXES))
        state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
        target = {k: v for k, v in target.items() if not k.startswith(_HEAD_PREFIXES)}

    to_load = {}
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
        elif value.shape != target[key].shape:
            report.mismatched.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            to_load[key] = value
    report.missing = [k for k in target if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)]
    if strict and not report.clean:
        lines = [
            f"{where} ({layout} layout) does not fit {type(model).__name__} {getattr(model, 'variant', '')}".rstrip()
            + ":"
        ]
        lines += _describe_mismatch(report.missing, report.unexpected, report.mismatched)
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(to_load, strict=False)
    report.loaded = len(to_load)
    return report


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _model_meta(model: nn.Module, extra: Mapping[str, object] | None) -> dict[str, str]:
    meta = {
        "format": "nextvit",
        "variant": str(getattr(model, "variant", "")),
        "folded": "1" if getattr(model, "is_folded", False) else "0",
        "num_classes": str(getattr(model, "num_classes", "")),
        "kv_pool": str(getattr(model, "kv_pool", "1d")),
    }
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def save_checkpoint(model: nn.Module, path: str | os.PathLike, extra_meta: Mapping[str, object] | None = None) -> Path:
    """Save weights in this package's format, atomically: `.safetensors`, or a torch file otherwise."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = _model_meta(model, extra_meta)
    if path.suffix in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    else:
        atomic_write(path, lambda tmp: torch.save({"state_dict": state, "nextvit_meta": meta}, tmp))
    return path


def save_bytedance_checkpoint(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save an unfolded model in the original release's layout (``{"model": state_dict}``)."""
    if getattr(model, "is_folded", False):
        raise CheckpointError("the original layout has no folded form: save the model before folding")
    path = Path(path)
    state = timm_to_bytedance({k: v.detach().cpu() for k, v in model.state_dict().items()}, tuple(model.depths))
    atomic_write(path, lambda tmp: torch.save({"model": state}, tmp))
    return path
