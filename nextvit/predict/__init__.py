"""Run a deployed Next-ViT classifier on image files: any artifact kind, one interface.

    from nextvit.predict import load_predictor, predict_images
    from nextvit.images import collect_images

    predictor = load_predictor("nextvit_tiny_int8.onnx")  # preprocessing and classes from its sidecar
    predictor = load_predictor("model.safetensors", device="cuda", dtype="fp16")  # or a .pt2 package
    predictions, summary = predict_images(predictor, collect_images(["photos/"]), topk=5)

`predictors.py` loads a model file of any kind as a `Predictor`; `loop.py` runs one over image
files (decoding ahead in threads, batching, top-k, writing). The command line is deployment/predict.py.
"""

from .loop import OUTPUT_FORMATS, Prediction, PredictionSummary, ResultWriter, predict_images, softmax_topk
from .predictors import (
    ARTIFACT_KINDS,
    PREDICT_DEVICES,
    PREDICT_DTYPES,
    PREDICT_FLAGS,
    PredictError,
    Predictor,
    artifact_kind,
    load_predictor,
)

__all__ = [
    "ARTIFACT_KINDS",
    "OUTPUT_FORMATS",
    "PREDICT_DEVICES",
    "PREDICT_DTYPES",
    "PREDICT_FLAGS",
    "PredictError",
    "Prediction",
    "PredictionSummary",
    "Predictor",
    "ResultWriter",
    "artifact_kind",
    "load_predictor",
    "predict_images",
    "softmax_topk",
]
