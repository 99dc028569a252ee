_base_ = ["./_base_/upernet_nextvit_160k.py"]

pretrained = "../checkpoints/nextvit_large_in1k_224.pth"
model = dict(backbone=dict(arch="large", init_cfg=dict(type="Pretrained", checkpoint=pretrained)))
