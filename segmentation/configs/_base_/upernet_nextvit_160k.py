# UperNet with a Next-ViT backbone on ADE20K, 160k schedule: the primitive of the upernet_* configs.
# Settings of the original release: the segmentation backbone of ./nextvit_backbone.py (extra output
# norms, nothing frozen, BatchNorms training, drop-path 0.2); UPerHead with 512 channels and pool scales
# (1, 2, 3, 6); an FCN auxiliary head on the stage-2 output (512 channels in, 256 inside, loss
# weight 0.4); AdamW lr 6e-5, weight decay 0.01, none on norms; 1500-iteration linear warm-up, then
# poly decay (power 1.0) to 0; 2 images per GPU x 8 GPUs = 16; 160k iterations, evaluated every 16k.
_base_ = [
    "mmseg::_base_/models/upernet_r50.py",
    "./ade20k_512x512.py",
    "mmseg::_base_/default_runtime.py",
    "mmseg::_base_/schedules/schedule_160k.py",
    "./nextvit_backbone.py",
]

crop_size = (512, 512)
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(_base_.nextvit_backbone, _delete_=True),  # noqa: F821
    decode_head=dict(
        in_channels=[96, 256, 512, 1024], pool_scales=(1, 2, 3, 6), channels=512, num_classes=150, norm_cfg=norm_cfg
    ),
    auxiliary_head=dict(
        in_channels=512,
        in_index=2,
        channels=256,
        num_classes=150,
        norm_cfg=norm_cfg,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4),
    ),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=160000, val_interval=16000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=16000, max_keep_ckpts=2, save_best="mIoU"))
