"""Run a deployed Next-ViT classifier on image files: any artifact kind, one interface.

    from nextvit.predict import load_predictor, predict_images
    from nextvit.images import collect_images

    predictor = load_predictor("nextvit_tiny_int8.onnx")  # preprocessing and classes from its sidecar
    predictions, summary = predict_images(predictor, collect_images(["photos/"]), topk=5)

The command line is deployment/predict.py.
"""

from .run import OUTPUT_FORMATS, Prediction, PredictionSummary, ResultWriter, predict_images, softmax_topk
from .runtimes import ARTIFACT_KINDS, PredictError, Predictor, artifact_kind, load_predictor

__all__ = [
    "ARTIFACT_KINDS",
    "OUTPUT_FORMATS",
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
