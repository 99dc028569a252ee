_base_ = ["./_base_/mask_rcnn_nextvit_fpn_1x.py"]

pretrained = "../checkpoints/nextvit_large_in1k_224.pth"
model = dict(backbone=dict(arch="large", init_cfg=dict(type="Pretrained", checkpoint=pretrained)))
