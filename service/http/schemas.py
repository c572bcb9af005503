"""Response shapes, for the OpenAPI document. Routes build plain dicts (encoded by orjson) for
speed; these models describe them to clients and /docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_value"])
    message: str = Field(examples=["instance 0: expected 28x28 or 784 pixel values each, got shape 783"])
    request_id: str = Field(
        description="the request's X-Request-ID (the client's, or one the server made)",
        examples=["3f2b9c0e5d6a4b7c8e9f0a1b2c3d4e5f"],
    )


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


class ModelRef(BaseModel):
    name: str = Field(examples=["mnist-mlp"])
    version: int = Field(examples=[1])


class Prediction(BaseModel):
    label: int
    class_name: str
    confidence: float = Field(description="probability of the predicted class")
    probabilities: list[float]
    input: list[list[float]] | None = Field(
        None, description="28x28 pixels in [0, 1] the model saw (after preprocessing), with return_input"
    )


class PredictResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]


class UncertainPrediction(Prediction):
    std: list[float] = Field(description="per-class std of the T softmax outputs")
    predictive_entropy: float = Field(description="H[p̄] in nats: total uncertainty")
    expected_entropy: float = Field(description="mean_t H[p_t] in nats: aleatoric")
    mutual_information: float = Field(description="difference, clamped at 0: epistemic (BALD)")
    variation_ratio: float = Field(description="1 - modal votes / T")
    ood: bool = Field(description="mutual_information above the model's calibrated threshold")
    sample_probabilities: list[list[float]] | None = Field(None, description="T x C, with return_samples")
    prediction_set: list[int] | None = Field(
        None,
        description="with coverage: class ids whose split-conformal set holds the true label with "
        "probability >= coverage on inputs like the validation data; never empty",
    )
    prediction_set_names: list[str] | None = Field(None, description="the set's class names")
    coverage: float | None = Field(None, description="the calibrated level the set was built for")
    abstain: bool | None = Field(
        None, description="with coverage: the model's risk policy says not to act on this answer"
    )


class UncertaintyResponse(BaseModel):
    model: ModelRef
    samples: int
    seed: int
    predictions: list[UncertainPrediction]


class ModelSummary(BaseModel):
    name: str
    versions: list[int]
    default_version: int
    ready: bool


class ModelList(BaseModel):
    default_model: str
    models: list[ModelSummary]


class ModelMetadata(BaseModel):
    name: str
    version: int
    versions: list[int]
    input: dict[str, Any]
    classes: list[str]
    architecture: dict[str, Any]
    metrics: dict[str, Any]
    uncertainty: dict[str, Any]
    provenance: dict[str, Any]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        400: "malformed body",
        401: "missing or wrong API key",
        404: "unknown model or version",
        413: "body, image or instance count too large",
        415: "unsupported media type",
        422: "invalid values",
        503: "overloaded or not ready (see Retry-After)",
    }.items()
}


class V2Error(BaseModel):
    """The Open Inference Protocol's error object."""

    error: str = Field(examples=["unknown model 'nope'; this server has: mnist-mlp"])


V2_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": V2Error, "description": spec["description"]} for status, spec in ERROR_RESPONSES.items()
}

INFERENCE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "description": "28x28 nested arrays or flat 784 arrays of pixels in [0, 1], "
                            'or {"b64": "<base64 image>"}',
                            "items": {},
                        },
                        "samples": {"type": "integer", "minimum": 1},
                        "seed": {"type": "integer", "minimum": 0},
                        "return_samples": {"type": "boolean"},
                        "return_input": {
                            "type": "boolean",
                            "description": "add each instance's preprocessed 28x28 pixels as `input`",
                        },
                        "coverage": {
                            "type": "number",
                            "description": "uncertainty only: a calibrated level (GET /v1/models/{name} "
                            "lists them, e.g. 0.99) for `prediction_set` and `abstain`",
                        },
                    },
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
