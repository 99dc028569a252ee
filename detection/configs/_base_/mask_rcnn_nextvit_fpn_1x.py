# Mask R-CNN + FPN with a Next-ViT backbone, 1x schedule: the primitive config of this folder.
# Settings of the original release: FPN [96, 256, 512, 1024] -> 256 with 5 outputs, standard RPN,
# Shared2FC box head and FCN mask head; the backbone of configs/nextvit_backbone.py (repository root)
# with stem + stage 0 frozen and BatchNorms in eval mode; AdamW lr 1e-4, weight decay 0.05, none on
# norms; 500-iteration linear warm-up from 1e-6; 12 epochs, steps at 8 and 11; 2 images per GPU x 8
# GPUs; mixed precision with loss scale 512.
_base_ = [
    "mmdet::_base_/models/mask-rcnn_r50_fpn.py",
    "mmdet::_base_/datasets/coco_instance.py",
    "mmdet::_base_/schedules/schedule_1x.py",
    "mmdet::_base_/default_runtime.py",
    "../../../configs/nextvit_backbone.py",
]

model = dict(
    backbone=dict(_base_.nextvit_backbone, _delete_=True, frozen_stages=1, norm_eval=True),  # noqa: F821
    neck=dict(in_channels=[96, 256, 512, 1024], out_channels=256, num_outs=5),
)

train_dataloader = dict(batch_size=2, num_workers=2)
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type="AmpOptimWrapper",  # train.py uses a plain OptimWrapper where CUDA is missing
    loss_scale=512.0,
    optimizer=dict(_delete_=True, type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0),
)
auto_scale_lr = dict(enable=False, base_batch_size=16)
