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
    # Temperature of the MC mean: the answer's probabilities are softmax(log p̄ / temperature)
    # (models/calibration.py). 1 leaves p̄ as it is, as in manifests written before it existed.
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError("temperature must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        threshold = data.get("ood_threshold")
        return cls(
            ood_threshold=None if threshold is None else float(threshold),
            ood_quantile=float(data.get("ood_quantile", 0.95)),
            samples=int(data.get("samples", 100)),
            temperature=float(data.get("temperature", 1.0)),
        )


@dataclass(frozen=True)
class ConformalLevel:
    """One calibrated coverage level of split-conformal prediction sets (models/conformal.py)."""

    coverage: float  # the target: P(true label in set) >= coverage on exchangeable inputs
    quantile: float | None  # q̂: labels scoring at most this join the set; None: every label does
    penalty: float = 0.0  # RAPS lambda per rank past `penalty_from_rank`; 0 is APS
    penalty_from_rank: int = 1  # RAPS k_reg: ranks up to this one go unpenalized

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConformalLevel:
        quantile = data.get("quantile")
        return cls(
            coverage=float(data["coverage"]),
            quantile=None if quantile is None else float(quantile),
            penalty=float(data.get("penalty", 0.0)),
            penalty_from_rank=int(data.get("penalty_from_rank", 1)),
        )


@dataclass(frozen=True)
class Conformal:
    """Split-conformal prediction sets, calibrated on held-out validation data at training time."""

    method: str  # "raps" (adaptive prediction sets, rank-regularized; penalty 0 is plain APS)
    samples: int  # MC passes of the (temperature-scaled) mean the scores were computed on
    calibration_size: int  # n, the validation inputs whose scores set the quantiles
    levels: tuple[ConformalLevel, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)  # split, seeds, tuning, temperature

    def level(self, coverage: float) -> ConformalLevel | None:
        """The calibrated level equal to `coverage` (to 1e-9), or None."""
        return next((lv for lv in self.levels if abs(lv.coverage - coverage) <= 1e-9), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conformal:
        return cls(
            method=str(data["method"]),
            samples=int(data["samples"]),
            calibration_size=int(data["calibration_size"]),
            levels=tuple(ConformalLevel.from_dict(level) for level in data["levels"]),
            provenance=dict(data.get("provenance", {})),
        )


@dataclass(frozen=True)
class Abstention:
    """The documented risk policy: abstain when `score` is above `threshold`, the largest threshold
    whose accepted validation inputs had an error rate (selective risk) at most `target_risk`."""

    score: str  # the uncertainty answer's field compared, e.g. "predictive_entropy"
    threshold: float | None  # None: no threshold met the target on validation, so always abstain
    target_risk: float  # e.g. 0.005: at most 0.5% errors among the inputs not abstained on
    validation_risk: float  # the risk measured on validation at `threshold`
    validation_accepted: float  # share of validation inputs accepted at `threshold`
    samples: int  # MC passes the scores were computed with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Abstention:
        threshold = data.get("threshold")
        return cls(
            score=str(data["score"]),
            threshold=None if threshold is None else float(threshold),
            target_risk=float(data["target_risk"]),
            validation_risk=float(data["validation_risk"]),
            validation_accepted=float(data["validation_accepted"]),
            samples=int(data["samples"]),
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
    # Sections added after format 1 was fixed; manifests without them load with None (no sets, no
    # abstain flag).
    conformal: Conformal | None = None
    abstention: Abstention | None = None

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
            "conformal": None if self.conformal is None else self.conformal.to_dict(),
            "abstention": None if self.abstention is None else self.abstention.to_dict(),
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
            conformal=None if data.get("conformal") is None else Conformal.from_dict(data["conformal"]),
            abstention=None if data.get("abstention") is None else Abstention.from_dict(data["abstention"]),
            provenance=dict(data.get("provenance", {})),
            metrics=dict(data.get("metrics", {})),
        )
