"""Core results -> the JSON bodies of SPEC's predict and uncertainty responses."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from models.artifact import LoadedModel
from service.engine.compute import UncertaintyResult


class FastJSONResponse(Response):
    """orjson-encoded JSON; numpy arrays serialize natively."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def model_ref(loaded: LoadedModel) -> dict[str, Any]:
    return {"name": loaded.manifest.name, "version": loaded.manifest.version}


def prediction_body(loaded: LoadedModel, probabilities: np.ndarray) -> dict[str, Any]:
    """probabilities (B, C) -> {"model", "predictions": [{label, class_name, confidence, probabilities}]}"""
    names = loaded.manifest.class_names
    labels = probabilities.argmax(-1)
    return {
        "model": model_ref(loaded),
        "predictions": [
            {
                "label": int(label),
                "class_name": names[label],
                "confidence": float(row[label]),
                "probabilities": row.tolist(),
            }
            for label, row in zip(labels, probabilities, strict=True)
        ],
    }


def uncertainty_body(loaded: LoadedModel, result: UncertaintyResult) -> dict[str, Any]:
    names = loaded.manifest.class_names
    threshold = loaded.manifest.calibration.ood_threshold
    summary = result.summary
    labels = summary.mean_probabilities.argmax(-1)
    predictions = []
    for i, label in enumerate(labels):
        mutual_information = float(summary.mutual_information[i])
        entry: dict[str, Any] = {
            "label": int(label),
            "class_name": names[label],
            "confidence": float(summary.mean_probabilities[i, label]),
            "probabilities": summary.mean_probabilities[i].tolist(),
            "std": summary.std[i].tolist(),
            "predictive_entropy": float(summary.predictive_entropy[i]),
            "expected_entropy": float(summary.expected_entropy[i]),
            "mutual_information": mutual_information,
            "variation_ratio": float(summary.variation_ratio[i]),
            "ood": threshold is not None and mutual_information > threshold,
        }
        if result.sample_probabilities is not None:
            entry["sample_probabilities"] = result.sample_probabilities[i].tolist()
        predictions.append(entry)
    return {
        "model": model_ref(loaded),
        "samples": result.samples,
        "seed": result.seed,
        "predictions": predictions,
    }
