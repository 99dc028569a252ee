_base_ = ["./_base_/fpn_nextvit_80k.py"]

pretrained = "../checkpoints/nextvit_small_in1k_224.pth"
model = dict(backbone=dict(arch="small", init_cfg=dict(type="Pretrained", checkpoint=pretrained)))
