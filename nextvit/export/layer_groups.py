"""Groups of a Next-ViT ONNX graph's nodes by where they sit in the model: stage and block part.

The exporter names every node after the module that made it
(`/stages/stages.2/blocks/blocks.4/e_mhsa/MatMul`), so the nodes of one kind of layer in one stage
can be picked out by name: `stages.2.e_mhsa` (the attention of every NTB of stage 2),
`stages.0.mhca`, `stages.1.mlp`, `stages.3.patch_embed`, `stages.2.block` (the blocks' own residual
Adds and Concats), `stem`, `norm`, `head`. int8 quantization keeps chosen groups in fp32 by these
names (`quantize_qdq(keep_fp32=...)`), and the sensitivity analysis measures them one at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["group_of_node", "layer_groups", "layer_nodes"]


def group_of_node(name: str) -> str:
    """The group of one node name: `stem`, `stages.<i>.<part>` (`block` for the block's own ops), or
    the top-level module (`norm`, `head`); names without a module path belong to `graph`."""
    parts = [p for p in name.split("/") if p]
    if len(parts) < 2:
        return "graph"
    if parts[0] == "stages" and len(parts) >= 4 and parts[2] == "blocks":
        part = parts[4] if len(parts) >= 6 else "block"
        return f"{parts[1]}.{part}"
    return parts[0]


def layer_groups(onnx_path: str | os.PathLike) -> dict[str, list[str]]:
    """Every group of the graph at `onnx_path` with its node names, in graph order."""
    import onnx

    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        groups.setdefault(group_of_node(node.name), []).append(node.name)
    return groups


def layer_nodes(onnx_path: str | os.PathLike, names: Iterable[str]) -> list[str]:
    """The node names of the groups `names`; a name that is no group of this graph raises ValueError
    listing the groups there are."""
    names = list(names)
    if not names:
        return []
    groups = layer_groups(onnx_path)
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise ValueError(f"no layer group {', '.join(unknown)} in this model; its groups are {', '.join(groups)}")
    return [node for n in names for node in groups[n]]
