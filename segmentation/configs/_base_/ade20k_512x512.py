# ADE20K at data/ade/ADEChallengeData2016 (mmseg's layout), 512x512 crops: the data settings of the
# original release. Training: resize to (2048, 512) x ratio 0.5-2.0, 512 crops (a crop may be at
# most 75 % one class), flip, photometric distortion. Testing: whole image resized to (2048, 512).
# Multi-scale + flip testing (test.py --aug-test) follows the original's protocol: the image is
# resized to (2048, 512) x r for r in 0.5 ... 1.75, each scale also flipped, and the logits averaged.
_base_ = ["mmseg::_base_/datasets/ade20k.py"]

img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type="LoadImageFromFile", backend_args=None),
    dict(
        type="TestTimeAug",
        transforms=[
            [dict(type="Resize", scale=(int(2048 * r), int(512 * r)), keep_ratio=True) for r in img_ratios],
            [
                dict(type="RandomFlip", prob=0.0, direction="horizontal"),
                dict(type="RandomFlip", prob=1.0, direction="horizontal"),
            ],
            [dict(type="LoadAnnotations", reduce_zero_label=True)],
            [dict(type="PackSegInputs")],
        ],
    ),
]
train_dataloader = dict(batch_size=2, num_workers=4)  # 2 images per GPU x 8 GPUs = 16
val_dataloader = dict(batch_size=1, num_workers=4)
test_dataloader = val_dataloader
