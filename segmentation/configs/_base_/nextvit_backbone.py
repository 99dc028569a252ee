# The backbone as the original release's segmentation runs trained it, on top of the settings shared
# with detection: a BatchNorm on every stage output (the last one is the classifier's final norm),
# nothing frozen, BatchNorms training (SyncBN across GPUs; train.py uses BN when the run is not
# distributed over GPUs), drop-path 0.2 for every size (classification used 0.1 for S).
_base_ = ["../../../configs/nextvit_backbone.py"]

nextvit_backbone = dict(with_extra_norm=True, drop_path_rate=0.2, norm_cfg=dict(type="SyncBN", requires_grad=True))
