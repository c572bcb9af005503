"""The server's answers as dataclasses. Fields a newer server adds are ignored, not errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRef:
        return cls(str(data["name"]), int(data["version"]))


@dataclass(frozen=True)
class Prediction:
    """A deterministic prediction (eval mode, no dropout) for one input."""

    label: int
    class_name: str
    confidence: float  # probability of `label`
    probabilities: list[float]  # one per class

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        return cls(data["label"], data["class_name"], data["confidence"], data["probabilities"])


@dataclass(frozen=True)
class UncertainPrediction:
    """MC-dropout statistics for one input; entropies in nats."""

    label: int
    class_name: str
    confidence: float  # mean probability of `label` over the passes
    probabilities: list[float]  # p̄, the mean over passes, one per class
    std: list[float]  # per class, over passes
    predictive_entropy: float  # H[p̄]: total uncertainty
    expected_entropy: float  # mean_t H[p_t]: aleatoric
    mutual_information: float  # their difference: epistemic
    variation_ratio: float
    ood: bool  # mutual information above the model's calibrated threshold
    sample_probabilities: list[list[float]] | None = None  # T x C, with return_samples
    prediction_set: list[int] | None = None  # class ids, with coverage
    abstain: bool | None = None  # with coverage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UncertainPrediction:
        return cls(
            label=data["label"],
            class_name=data["class_name"],
            confidence=data["confidence"],
            probabilities=data["probabilities"],
            std=data["std"],
            predictive_entropy=data["predictive_entropy"],
            expected_entropy=data["expected_entropy"],
            mutual_information=data["mutual_information"],
            variation_ratio=data["variation_ratio"],
            ood=data["ood"],
            sample_probabilities=data.get("sample_probabilities"),
            prediction_set=data.get("prediction_set"),
            abstain=data.get("abstain"),
        )


@dataclass(frozen=True)
class PredictResponse:
    model: ModelRef  # the version that answered
    predictions: list[Prediction]  # one per input, in order
    request_id: str | None  # the server's X-Request-ID, for its logs

    @classmethod
    def from_json(cls, data: dict[str, Any], request_id: str | None) -> PredictResponse:
        predictions = [Prediction.from_json(p) for p in data["predictions"]]
        return cls(ModelRef.from_json(data["model"]), predictions, request_id)


@dataclass(frozen=True)
class UncertaintyResponse:
    model: ModelRef
    samples: int  # MC passes
    seed: int  # send it back for the same answer, byte for byte
    predictions: list[UncertainPrediction]
    request_id: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any], request_id: str | None) -> UncertaintyResponse:
        predictions = [UncertainPrediction.from_json(p) for p in data["predictions"]]
        return cls(ModelRef.from_json(data["model"]), data["samples"], data["seed"], predictions, request_id)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: list[int]
    default_version: int
    ready: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSummary:
        return cls(data["name"], data["versions"], data["default_version"], data["ready"])


@dataclass(frozen=True)
class VersionReload:
    version: int
    status: str  # loaded, kept, failed or removed
    error: str | None = None  # why it failed to load


@dataclass(frozen=True)
class ReloadResponse:
    name: str
    versions: list[VersionReload]
    serving: list[int]  # versions served after the reload
    default_version: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReloadResponse:
        versions = [VersionReload(v["version"], v["status"], v.get("error")) for v in data["versions"]]
        return cls(data["name"], versions, data["serving"], data["default_version"])
