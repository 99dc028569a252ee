_base_ = ["./_base_/upernet_nextvit_160k.py"]

pretrained = "../checkpoints/nextvit_base_in1k_224.pth"
model = dict(backbone=dict(arch="base", init_cfg=dict(type="Pretrained", checkpoint=pretrained)))
