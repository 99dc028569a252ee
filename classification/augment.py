"""The training augmentation: timm's transform, repaired for today's Pillow, with errors that name the op.

Two things are added to what `timm.data.create_transform` builds, and nothing else is changed:

- **Posterize with 0 bits.** timm's RandAugment, AugMix and AutoAugment policies can ask Pillow to
  keep 0 bits of each channel (`PosterizeIncreasing` at magnitude 10: the default
  `rand-m9-mstd0.5-inc1` draws its magnitude from N(9, 0.5), clipped at 10; `Posterize` of the
  v0/3a policies at magnitudes below 2.5). Pillow up to 12 returned an all-black image; Pillow 13
  raises `ValueError: bits must be between or equal to 1 and 8`, about once in 550 images with the
  default policy, so an ImageNet epoch cannot finish. `zero_bit_posterize` does what older Pillow
  did, and replaces timm's op in every policy. Written for timm 1.0.31 and Pillow 13.0; remove it
  when timm stops asking for 0 bits (tests/test_augment.py fails then, saying so).
- **Errors that name the operation.** Each step of the transform, and each op inside the
  RandAugment/AugMix/AutoAugment policies, re-raises a failure as `AugmentationError` naming the
  step; the dataset adds the image path (imagefolder.py), so a user reads which file and which
  operation, not a DataLoader worker's traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from PIL import Image, ImageOps
from timm.data import auto_augment as timm_aa
from timm.data import create_transform

__all__ = [
    "AugmentationError",
    "NamedStep",
    "augment_ops",
    "build_train_transform",
    "zero_bit_posterize",
]


class AugmentationError(RuntimeError):
    """A step of the training transform failed; `step` names it, `cause` is the original error."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"augmentation step {step} failed: {type(cause).__name__}: {cause}")
        self.step = step
        self.cause = cause


def zero_bit_posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's `posterize` with Pillow <= 12's answer for 0 bits: every channel zero (a black image)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)


class NamedStep:
    """A transform (or one policy op) that re-raises its failures as `AugmentationError(name)`."""

    def __init__(self, fn: Callable, name: str) -> None:
        self.fn = fn
        self.name = name

    def __call__(self, img):
        try:
            return self.fn(img)
        except AugmentationError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the op raised, said with its name
            raise AugmentationError(self.name, err) from err

    def __getattr__(self, attr: str):  # the wrapped op's own fields (name, prob, magnitude, ...)
        if attr == "fn":  # not set yet (during unpickling): no recursion
            raise AttributeError(attr)
        return getattr(self.fn, attr)

    def __repr__(self) -> str:
        return repr(self.fn)


def _policy_lists(policy) -> Iterator[list]:
    """The lists of ops inside a timm policy object: RandAugment/AugMix `.ops`, AutoAugment `.policy`."""
    if isinstance(policy, (timm_aa.RandAugment, timm_aa.AugMixAugment)):
        yield policy.ops
    elif isinstance(policy, timm_aa.AutoAugment):
        yield from policy.policy


def _op_name(op: timm_aa.AugmentOp, policy) -> str:
    return f"{type(policy).__name__} op {op.name} (p={op.prob}, m={op.magnitude})"


def augment_ops(transform) -> Iterator[timm_aa.AugmentOp]:
    """Every timm `AugmentOp` inside `transform` (wrapped or not), for inspection."""
    for step in getattr(transform, "transforms", [transform]):
        policy = step.fn if isinstance(step, NamedStep) else step
        for ops in _policy_lists(policy):
            for op in ops:
                yield op.fn if isinstance(op, NamedStep) else op


def harden(transform):
    """`transform` with the 0-bit posterize fixed and every step and policy op named (in place)."""
    steps = getattr(transform, "transforms", None)
    if steps is None:
        return NamedStep(harden_policy(transform), type(transform).__name__)
    for i, step in enumerate(steps):
        steps[i] = NamedStep(harden_policy(step), type(step).__name__)
    return transform


def harden_policy(step):
    """Fix and name the ops of one timm policy object; any other transform comes back as it was."""
    for ops in _policy_lists(step):
        for i, op in enumerate(ops):
            if op.aug_fn is timm_aa.posterize:
                op.aug_fn = zero_bit_posterize
            ops[i] = NamedStep(op, _op_name(op, step))
    return step


def build_train_transform(
    input_size: int,
    *,
    color_jitter: float | None,
    auto_augment: str | None,
    interpolation: str,
    re_prob: float,
    re_mode: str,
    re_count: int,
):
    """timm's training transform (random resized crop, flip, RandAugment, random erasing), hardened."""
    transform = create_transform(
        input_size=input_size,
        is_training=True,
        color_jitter=color_jitter,
        auto_augment=None if auto_augment in (None, "", "none") else auto_augment,
        interpolation=interpolation,
        re_prob=re_prob,
        re_mode=re_mode,
        re_count=re_count,
    )
    return harden(transform)
