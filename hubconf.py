"""torch.hub entry points: `torch.hub.load("<repo>", "nextvit_small", pretrained=True)`."""

dependencies = ["torch", "safetensors"]

from nextvit import create_model as _create  # noqa: E402


def nextvit_small(pretrained: bool = False, **kwargs):
    """Next-ViT-S (31.8 M parameters, 5.8 GFLOPs at 224)."""
    return _create("nextvit_small", pretrained=pretrained, **kwargs)


def nextvit_base(pretrained: bool = False, **kwargs):
    """Next-ViT-B (44.8 M parameters, 8.3 GFLOPs at 224)."""
    return _create("nextvit_base", pretrained=pretrained, **kwargs)


def nextvit_large(pretrained: bool = False, **kwargs):
    """Next-ViT-L (57.9 M parameters, 10.8 GFLOPs at 224)."""
    return _create("nextvit_large", pretrained=pretrained, **kwargs)
