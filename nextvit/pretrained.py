"""The released Next-ViT checkpoints: where each lives and how its inputs were preprocessed.

Accuracy is the paper's (Acc@1 on ImageNet-1K val, best epoch, crop 0.875 at both 224 and 384).
The original files are on Google Drive (see `url`); timm mirrors them on the Hugging Face Hub
(`hf_hub_id`), which is what `create_model(..., pretrained=True)` downloads. Either file loads
with `nextvit.load_checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PretrainedCfg", "PRETRAINED", "get_pretrained_cfg", "download_pretrained", "model_cfg"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 0.875  # the original evaluation's center crop, at 224 and at 384
_DRIVE = "https://drive.google.com/file/d/{}/view?usp=sharing"


@dataclass(frozen=True)
class PretrainedCfg:
    arch: str
    tag: str
    dataset: str
    input_size: int
    top1: float
    file: str
    url: str
    crop_pct: float = CROP_PCT
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def hf_hub_id(self) -> str:
        return f"timm/{self.name}"


def _cfg(arch, tag, dataset, size, top1, file, drive_id) -> PretrainedCfg:
    return PretrainedCfg(arch, tag, dataset, size, top1, file, _DRIVE.format(drive_id))


# Source: the original README's model zoo (bytedance/Next-ViT).
PRETRAINED: dict[str, PretrainedCfg] = {
    c.name: c
    for c in [
        _cfg(
            "nextvit_small",
            "bd_in1k",
            "ImageNet-1K",
            224,
            82.5,
            "nextvit_small_in1k_224.pth",
            "1yoJFpMdnwVseEEnSJxF8CIZ_txn1o_aS",
        ),
        _cfg(
            "nextvit_base",
            "bd_in1k",
            "ImageNet-1K",
            224,
            83.2,
            "nextvit_base_in1k_224.pth",
            "1zaYLlDKMI0OUcYBPoGPXR8lKdrsBq3qp",
        ),
        _cfg(
            "nextvit_large",
            "bd_in1k",
            "ImageNet-1K",
            224,
            83.6,
            "nextvit_large_in1k_224.pth",
            "15hiQhAu_YNXboVPsbXpuaflfYkodkYZk",
        ),
        _cfg(
            "nextvit_small",
            "bd_in1k_384",
            "ImageNet-1K",
            384,
            83.6,
            "nextvit_small_in1k_384.pth",
            "1lBBqXFFjWdaPq-zqKyW0uTsToQh43mP_",
        ),
        _cfg(
            "nextvit_base",
            "bd_in1k_384",
            "ImageNet-1K",
            384,
            84.3,
            "nextvit_base_in1k_384.pth",
            "1D1oZUBHEpWb8uzoRuLs-aFcyjX74zzb3",
        ),
        _cfg(
            "nextvit_large",
            "bd_in1k_384",
            "ImageNet-1K",
            384,
            84.7,
            "nextvit_large_in1k_384.pth",
            "1MMGeXeIqrL8UXYuHEFdMArPDd-8L51Ag",
        ),
        _cfg(
            "nextvit_small",
            "bd_ssld_6m_in1k",
            "ImageNet-1K-6M",
            224,
            84.8,
            "nextvit_small_in1k6m_224.pth",
            "1b7ChnlT3uG3pTaZjtwYtnAaxAESF0MqK",
        ),
        _cfg(
            "nextvit_base",
            "bd_ssld_6m_in1k",
            "ImageNet-1K-6M",
            224,
            85.1,
            "nextvit_base_in1k6m_224.pth",
            "1qYtex2EZ23TzVqaFlGh14hAxVjfuILWv",
        ),
        _cfg(
            "nextvit_large",
            "bd_ssld_6m_in1k",
            "ImageNet-1K-6M",
            224,
            85.4,
            "nextvit_large_in1k6m_224.pth",
            "1F5iLING3RzNbuZb4RwL7NLZZmJulKW3N",
        ),
        _cfg(
            "nextvit_small",
            "bd_ssld_6m_in1k_384",
            "ImageNet-1K-6M",
            384,
            85.8,
            "nextvit_small_in1k6m_384.pth",
            "104jeld9rJq8vwJ-i-RqlzF3mJzXCcQp9",
        ),
        _cfg(
            "nextvit_base",
            "bd_ssld_6m_in1k_384",
            "ImageNet-1K-6M",
            384,
            86.1,
            "nextvit_base_in1k6m_384.pth",
            "17bCu4EbxOUmhgPCP5wlDH_p8m35oTT38",
        ),
        _cfg(
            "nextvit_large",
            "bd_ssld_6m_in1k_384",
            "ImageNet-1K-6M",
            384,
            86.4,
            "nextvit_large_in1k6m_384.pth",
            "1ZuLswj2xbUdg_t8TugjSJwDsHuIuMSIC",
        ),
    ]
}
DEFAULT_TAG = "bd_in1k"


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """Look up 'arch.tag' (or a bare arch, meaning its ImageNet-1K 224 weights)."""
    key = name if "." in name else f"{name}.{DEFAULT_TAG}"
    if key not in PRETRAINED:
        raise ValueError(f"no released weights named {name!r}; available: {', '.join(PRETRAINED)}")
    return PRETRAINED[key]


def model_cfg(cfg: PretrainedCfg | None, num_classes: int = 1000, in_chans: int = 3) -> dict:
    """timm's `pretrained_cfg` dict for a model: the release's data settings, or the defaults that
    every release shares (224, bicubic, crop 0.875, ImageNet mean/std) for a model built without one.

    `timm.data.resolve_data_config(model=...)` and timm-style tooling read it.
    """
    size = cfg.input_size if cfg is not None else 224
    return {
        "architecture": cfg.arch if cfg is not None else None,
        "tag": cfg.tag if cfg is not None else None,
        "hf_hub_id": cfg.hf_hub_id if cfg is not None else None,
        "url": cfg.url if cfg is not None else "",
        "num_classes": num_classes,
        "input_size": (in_chans, size, size),
        "pool_size": (size // 32, size // 32),
        "crop_pct": cfg.crop_pct if cfg is not None else CROP_PCT,
        "crop_mode": "center",
        "interpolation": cfg.interpolation if cfg is not None else "bicubic",
        "mean": cfg.mean if cfg is not None else IMAGENET_MEAN,
        "std": cfg.std if cfg is not None else IMAGENET_STD,
        "first_conv": "stem.0.conv",
        "classifier": "head.fc",
        "license": "apache-2.0",
    }


def download_pretrained(cfg: PretrainedCfg) -> Path:
    """Fetch timm's mirror of a release from the Hugging Face Hub (cached after the first call)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(cfg.hf_hub_id, "model.safetensors"))
    except Exception as err:  # noqa: BLE001 - any failure gets the same advice
        raise RuntimeError(
            f"could not download {cfg.name} from the Hugging Face Hub ({cfg.hf_hub_id}): {err}\n"
            f"Download the original file {cfg.file} from {cfg.url} and pass checkpoint_path=..."
        ) from err
