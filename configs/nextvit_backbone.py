# The Next-ViT backbone as the detection/ and segmentation/ configs build it: one home for the
# settings they share. A base of those configs' primitives, which take `nextvit_backbone` and
# set what their task changes (read through `_base_.nextvit_backbone`; mmengine forbids the same
# key, such as `model`, in two bases, so this file holds a plain variable instead).
custom_imports = dict(imports=["nextvit.mm"], allow_failed_imports=False)

pretrained = "../checkpoints/nextvit_small_in1k_224.pth"  # any layout nextvit reads
nextvit_backbone = dict(
    type="NextViTBackbone",
    arch="small",
    out_indices=(0, 1, 2, 3),  # 96/256/512/1024 channels for S/B/L, strides 4-32
    frozen_stages=-1,
    norm_eval=False,
    with_extra_norm=False,
    init_cfg=dict(type="Pretrained", checkpoint=pretrained),
)
