"""Dataclasses that describe a network and its input preprocessing; the manifest stores both."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any

ACTIVATIONS = ("relu", "gelu", "tanh")


@dataclass(frozen=True)
class MLPSpec:
    """Everything needed to rebuild a DropoutMLP; no code beside the manifest is required."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W) of one image
    hidden_sizes: tuple[int, ...] = (128,)
    num_classes: int = 10
    activation: str = "relu"
    input_dropout: float = 0.0  # applied to the pixels before the first layer
    hidden_dropout: float = 0.5  # applied after every hidden activation
    max_norm: float | None = None  # max-norm of each unit's incoming weights (training-time only)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {self.activation!r}")
        for name in ("input_dropout", "hidden_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError("hidden_sizes needs at least one positive layer width")
        if self.num_classes < 2:
            raise ValueError("num_classes must be at least 2")

    @property
    def input_size(self) -> int:
        return prod(self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MLPSpec:
        return cls(
            input_shape=tuple(data["input_shape"]),
            hidden_sizes=tuple(data["hidden_sizes"]),
            num_classes=int(data["num_classes"]),
            activation=str(data["activation"]),
            input_dropout=float(data["input_dropout"]),
            hidden_dropout=float(data["hidden_dropout"]),
            max_norm=None if data.get("max_norm") is None else float(data["max_norm"]),
        )


@dataclass(frozen=True)
class Normalization:
    """Per-pixel affine normalization applied to [0, 1] inputs: (x - mean) / std."""

    mean: float = 0.1307  # MNIST training-set pixel mean
    std: float = 0.3081  # MNIST training-set pixel std

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ValueError("normalization std must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(mean=float(data["mean"]), std=float(data["std"]))


@dataclass(frozen=True)
class Calibration:
    """Uncertainty calibration measured on held-out validation data."""

    ood_threshold: float | None = None  # mutual information (nats) above which an input is OOD
    ood_quantile: float = 0.95  # validation quantile the threshold was taken at
    samples: int = 100  # MC passes used when calibrating

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        threshold = data.get("ood_threshold")
        return cls(
            ood_threshold=None if threshold is None else float(threshold),
            ood_quantile=float(data.get("ood_quantile", 0.95)),
            samples=int(data.get("samples", 100)),
        )


@dataclass
class Manifest:
    """The `model.json` of an artifact."""

    name: str
    spec: MLPSpec
    normalization: Normalization
    class_names: list[str]
    weights_sha256: str = ""
    version: int = 0  # filled in by the repository when the artifact is published
    calibration: Calibration = field(default_factory=Calibration)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # headline figures only
    format_version: int = 1

    def __post_init__(self) -> None:
        if len(self.class_names) != self.spec.num_classes:
            raise ValueError("class_names must have one entry per class")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "architecture": {"type": "dropout-mlp", **self.spec.to_dict()},
            "preprocessing": {"normalization": self.normalization.to_dict()},
            "class_names": list(self.class_names),
            "weights": {"file": "model.safetensors", "sha256": self.weights_sha256},
            "calibration": self.calibration.to_dict(),
            "provenance": self.provenance,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format_version") != 1:
            raise ValueError(f"unsupported manifest format_version {data.get('format_version')!r}")
        architecture = {k: v for k, v in data["architecture"].items() if k != "type"}
        return cls(
            name=str(data["name"]),
            version=int(data.get("version", 0)),
            spec=MLPSpec.from_dict(architecture),
            normalization=Normalization.from_dict(data["preprocessing"]["normalization"]),
            class_names=[str(c) for c in data["class_names"]],
            weights_sha256=str(data["weights"]["sha256"]),
            calibration=Calibration.from_dict(data.get("calibration", {})),
            provenance=dict(data.get("provenance", {})),
            metrics=dict(data.get("metrics", {})),
        )
