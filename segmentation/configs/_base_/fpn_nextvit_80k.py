# Semantic FPN with a Next-ViT backbone on ADE20K, 80k schedule: the primitive of the fpn_* configs.
# Settings of the original release: the segmentation backbone of ./nextvit_backbone.py (extra output
# norms, nothing frozen, BatchNorms training, drop-path 0.2); FPN [96, 256, 512, 1024] -> 256 x 4
# levels; FPNHead with 128 channels and 150 classes; AdamW lr 1e-4, weight decay 1e-4; poly decay
# (power 0.9) to 1e-6.
#
# "80k" means 80k iterations at batch 16 (2 per GPU x 8), which is what this config does. The
# original run took the same number of images as 40k iterations at batch 32 (4 per GPU x 8); to
# repeat that exactly:
#   --cfg-options train_dataloader.batch_size=4 train_cfg.max_iters=40000 train_cfg.val_interval=4000 \
#                 param_scheduler.0.end=40000 default_hooks.checkpoint.interval=4000
_base_ = [
    "mmseg::_base_/models/fpn_r50.py",
    "./ade20k_512x512.py",
    "mmseg::_base_/default_runtime.py",
    "mmseg::_base_/schedules/schedule_80k.py",
    "./nextvit_backbone.py",
]

crop_size = (512, 512)
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(_base_.nextvit_backbone, _delete_=True),  # noqa: F821
    neck=dict(in_channels=[96, 256, 512, 1024], out_channels=256, num_outs=4),
    decode_head=dict(channels=128, num_classes=150, norm_cfg=norm_cfg),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
)
param_scheduler = [dict(type="PolyLR", eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000, max_keep_ckpts=2, save_best="mIoU"))
