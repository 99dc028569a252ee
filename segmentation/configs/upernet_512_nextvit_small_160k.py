_base_ = ["./_base_/upernet_nextvit_160k.py"]

pretrained = "../checkpoints/nextvit_small_in1k_224.pth"
model = dict(backbone=dict(arch="small", init_cfg=dict(type="Pretrained", checkpoint=pretrained)))
