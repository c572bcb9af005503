"""The model card: card.md and its PNG plots, rendered from model.json and metrics.json content."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import numpy as np

from training import plots

PLOTS = {
    "training_curves": "training_curves.png",
    "reliability": "reliability.png",
    "ood": "ood_histograms.png",
    "rotation": "rotation.png",
    "conformal": "prediction_sets.png",
    "risk_coverage": "risk_coverage.png",
    "shift": "shift.png",
}
SHIFT_LEVELS = ("0.99", "0.995", "0.999")  # the rotation table's columns: below 99%, sets are the top label


def _pct(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def headline_table(metrics: Mapping[str, Any]) -> str:
    """Test-set figures of the deterministic net beside the MC-dropout mean (the README shows it)."""
    test = metrics["test"]
    samples = test["mc_samples"]
    det, mc = test["deterministic"], test[f"mc_t{samples}"]
    rows = [
        ["Test error", _pct(1 - det["accuracy"]), _pct(1 - mc["accuracy"])],
        ["NLL (nats)", f"{det['nll']:.4f}", f"{mc['nll']:.4f}"],
        ["Brier", f"{det['brier']:.4f}", f"{mc['brier']:.4f}"],
        ["ECE (15 bins)", _pct(det["ece"]), _pct(mc["ece"])],
    ]
    ood = metrics.get("ood", {})
    if "scores" in ood:
        scores = ood["scores"]
        rows.append(
            [
                f"OOD AUROC vs {ood['dataset']}",
                f"{scores['max_probability_deterministic']['auroc']:.3f} (max-prob)",
                f"{scores['mutual_information']['auroc']:.3f} (MI), "
                f"{scores['predictive_entropy']['auroc']:.3f} (entropy)",
            ]
        )
    return _table(["", "Deterministic", f"MC dropout, T={samples}"], rows)


def _architecture(manifest: Mapping[str, Any]) -> str:
    arch = manifest["architecture"]
    widths = [int(np.prod(arch["input_shape"])), *arch["hidden_sizes"], arch["num_classes"]]
    parameters = sum(a * b + b for a, b in pairwise(widths))
    layers = " -> ".join(str(w) for w in widths)
    return (
        f"{layers} {arch['activation']} MLP ({parameters:,} parameters); input dropout "
        f"{arch['input_dropout']}, hidden dropout {arch['hidden_dropout']}, max-norm {arch['max_norm']}"
    )


def _training_section(manifest: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    recipe = manifest["provenance"]["recipe"]
    history = metrics["history"]
    best = min(history, key=lambda h: h["val_loss"])
    rows = [
        [
            "Data",
            f"{metrics['dataset']}: {metrics['train_size']:,} train, "
            f"{metrics['validation_size']:,} validation (held out from the training set), "
            f"{metrics['test']['n']:,} test",
        ],
        [
            "Optimiser",
            f"{recipe['optimizer']}, lr {recipe['learning_rate']}, momentum {recipe['momentum']}, "
            f"{recipe['schedule']} schedule",
        ],
        ["Batch, epochs", f"{recipe['batch_size']}, {recipe['epochs']}"],
        [
            "Training time",
            f"{metrics['train_seconds'] / 60:.1f} min on {manifest['provenance']['device']}"
            f" ({metrics.get('threads', '?')} threads)",
        ],
        [
            "Final validation error",
            f"{_pct(1 - history[-1]['val_accuracy'])} (lowest validation loss at epoch {best['epoch']})",
        ],
        [
            "Seed, versions",
            f"{manifest['provenance']['seed']}, torch {manifest['provenance']['versions']['torch']}, "
            f"commit {manifest['provenance'].get('git_commit') or 'unknown'}",
        ],
    ]
    return _table(["", ""], rows)


def _convergence(test: Mapping[str, Any]) -> str:
    rows = [
        [
            "deterministic",
            _pct(1 - test["deterministic"]["accuracy"]),
            f"{test['deterministic']['nll']:.4f}",
            f"{test['deterministic']['brier']:.4f}",
            _pct(test["deterministic"]["ece"]),
            "",
            "",
        ]
    ]
    for t in test["mc_grid"]:
        mc = test[f"mc_t{t}"]
        rows.append(
            [
                f"MC T={t}",
                _pct(1 - mc["accuracy"]),
                f"{mc['nll']:.4f}",
                f"{mc['brier']:.4f}",
                _pct(mc["ece"]),
                f"{mc['mean_predictive_entropy']:.4f}",
                f"{mc['mean_mutual_information']:.4f}",
            ]
        )
    return _table(["", "error", "NLL", "Brier", "ECE", "mean entropy", "mean MI"], rows)


def _selective(test: Mapping[str, Any]) -> str:
    table = test["selective"]
    names = [k for k in table if k != "abstain"]
    rows = [[_pct(a, 0), *(_pct(1 - table[n][i]) for n in names)] for i, a in enumerate(table["abstain"])]
    return _table(["abstain on", *(n.replace("_", " ") for n in names)], rows)


def _ood(ood: Mapping[str, Any]) -> str:
    if "scores" not in ood:
        return f"Skipped: {ood.get('skipped', 'no out-of-distribution data')}."
    rows = [
        [name.replace("_", " "), f"{s['auroc']:.4f}", f"{s['aupr_out']:.4f}", f"{s['aupr_in']:.4f}"]
        for name, s in ood["scores"].items()
    ]
    text = _table(["score", "AUROC", "AUPR (OOD positive)", "AUPR (in positive)"], rows)
    if "threshold" in ood:
        th = ood["threshold"]
        text += (
            f"\n\nThe `ood` flag (mutual information above {th['mutual_information']:.4g} nats, the 95th "
            f"percentile on validation) flags {_pct(th['flagged_in'], 1)} of the in-distribution test set "
            f"and {_pct(th['flagged_out'], 1)} of the {ood['dataset']} test set."
        )
    return text


def _rotation(rotation: Mapping[str, Any]) -> str:
    digit, crowd = rotation["digit"], rotation["population"]
    rows = [
        [
            f"{angle:.0f}°",
            str(digit["label"][i]),
            f"{digit['confidence'][i]:.3f}",
            f"{digit['predictive_entropy'][i]:.3f}",
            f"{digit['mutual_information'][i]:.3f}",
            _pct(crowd["accuracy"][i], 1),
            f"{crowd['mean_predictive_entropy'][i]:.3f}",
            f"{crowd['mean_mutual_information'][i]:.3f}",
        ]
        for i, angle in enumerate(rotation["angles"])
    ]
    header = [
        "angle",
        "label",
        "confidence",
        "entropy",
        "MI",
        f"accuracy ({crowd['n']})",
        "mean entropy",
        "mean MI",
    ]
    return _table(header, rows)


def _rotation_summary(rotation: Mapping[str, Any]) -> str:
    """One sentence on whether uncertainty rises as the digit leaves the training distribution."""
    digit, crowd = rotation["digit"], rotation["population"]
    angles = rotation["angles"]
    peak = max(range(len(angles)), key=lambda i: digit["mutual_information"][i])
    return (
        f"The digit's predictive entropy goes from {digit['predictive_entropy'][0]:.3f} at 0° to a "
        f"maximum of {max(digit['predictive_entropy']):.3f}, its mutual information from "
        f"{digit['mutual_information'][0]:.3f} to a maximum of {digit['mutual_information'][peak]:.3f} at "
        f"{angles[peak]:.0f}°; over the population, accuracy falls from {_pct(crowd['accuracy'][0], 1)} "
        f"to {_pct(min(crowd['accuracy']), 1)} while mean mutual information rises from "
        f"{crowd['mean_mutual_information'][0]:.3f} to {max(crowd['mean_mutual_information']):.3f}."
    )


def _calibration(calibration: Mapping[str, Any]) -> str:
    before, after = calibration["test"]["before"], calibration["test"]["after"]
    rows = [
        [
            name,
            f"{before[key]:.4f}" if key != "ece" else _pct(before[key]),
            f"{after[key]:.4f}" if key != "ece" else _pct(after[key]),
        ]
        for name, key in (("ECE (15 bins)", "ece"), ("NLL (nats)", "nll"), ("Brier", "brier"))
    ]
    return (
        f"The uncertainty answer's probabilities are the MC mean scaled by temperature "
        f"{calibration['temperature']:.4f}, fitted on {calibration['fitted_on']}: softmax(log p̄ / T). The "
        "label, entropies, mutual information and std are those of the passes, unchanged.\n\n"
        + _table(["test set, MC mean", "before", "after"], rows)
    )


def _conformal(conformal: Mapping[str, Any]) -> str:
    rows = []
    for level in conformal["levels"]:
        test, aps = level["test"], level["aps"]["test"]
        rows.append(
            [
                f"{100 * level['coverage']:g}%",
                f"{_pct(test['coverage'])} ± {_pct(test['standard_error'])}",
                f"{test['mean_size']:.3f}",
                _pct(test["singleton_rate"], 1),
                f"{level['penalty']:g}, {level['penalty_from_rank']}",
                "all labels" if level["quantile"] is None else f"{level['quantile']:.16g}",
                f"{_pct(aps['coverage'])}, {aps['mean_size']:.2f}",
            ]
        )
    header = [
        "level",
        "coverage ± 1 s.e.",
        "mean set size",
        "singletons",
        "λ, k_reg",
        "q̂",
        "APS: coverage, size",
    ]
    by_class = conformal["by_class"]
    class_rows = [
        [_level(key), *(_pct(c, 1) for c in values)] for key, values in by_class["coverage"].items()
    ]
    return (
        f"Split conformal, {conformal['method'].upper()} scores on the temperature-scaled MC mean at "
        f"T={conformal['samples']}, non-randomized (a set always holds the top label, so it is never empty); "
        f"quantiles from {conformal['calibration_size']:,} validation inputs "
        f"(rows {conformal['provenance']['calibration_rows']}), the penalty λ and k_reg per level tuned for "
        f"size on the disjoint rows {conformal['provenance']['tuning_rows']}. Measured on the "
        f"{conformal['test_n']:,} test inputs; the finite-sample guarantee is coverage ≥ level, and for "
        "continuous scores ≤ level + 1/(n+1).\n\n"
        + _table(header, rows)
        + "\n\nCoverage by true class:\n\n"
        + _table(["level", *by_class["classes"]], class_rows)
    )


def _level(key: str) -> str:
    """ "0.99" -> "99%" """
    return f"{100 * float(key):g}%"


def _abstention(abstention: Mapping[str, Any]) -> str:
    policy, test = abstention["policy"], abstention["test"]
    threshold = (
        "none met the target: always abstain" if policy["threshold"] is None else f"{policy['threshold']:.4g}"
    )
    return (
        f"`abstain` is true when {policy['score'].replace('_', ' ')} (T={policy['samples']}) is above "
        f"{threshold} nats: the largest threshold keeping the error among accepted validation inputs at most "
        f"{_pct(policy['target_risk'])} (measured there: {_pct(policy['validation_risk'])} with "
        f"{_pct(policy['validation_accepted'], 1)} accepted). On the test set it accepts "
        f"{_pct(test['accepted'], 1)} with {_pct(test['risk'])} errors among them."
    )


def _shift(shift: Mapping[str, Any]) -> str:
    rotation = shift["rotation"]
    shown = [k for k in rotation["coverage"] if k in SHIFT_LEVELS] or list(rotation["coverage"])[:3]
    rows = [
        [
            f"{angle:.0f}°",
            _pct(rotation["accuracy"][i], 1),
            *(f"{_pct(rotation['coverage'][k][i], 1)} / {rotation['mean_size'][k][i]:.2f}" for k in shown),
            _pct(rotation["ood_rate"][i], 1),
            _pct(rotation["abstain_rate"][i], 1),
        ]
        for i, angle in enumerate(rotation["angles"])
    ]
    header = ["angle", "accuracy", *(f"coverage / size at {_level(k)}" for k in shown), "ood", "abstain"]
    key = "0.99" if "0.99" in shown else shown[0]  # the level the sentence follows
    coverage = rotation["coverage"][key]
    worst = min(range(len(coverage)), key=coverage.__getitem__)
    ood, abstain = rotation["ood_rate"], rotation["abstain_rate"]
    text = (
        f"The first {rotation['n']:,} test digits rotated, T={rotation['samples']}: the guarantee covers "
        f"only inputs exchangeable with the calibration data. At {_level(key)}, coverage goes from "
        f"{_pct(coverage[0], 1)} at 0° to {_pct(coverage[worst], 1)} at {rotation['angles'][worst]:.0f}°, "
        f"where the mean set holds {rotation['mean_size'][key][worst]:.2f} labels, `ood` flags "
        f"{_pct(ood[worst], 1)} and `abstain` {_pct(abstain[worst], 1)} of the inputs "
        f"(at 0°: {_pct(ood[0], 1)} and {_pct(abstain[0], 1)}).\n\n" + _table(header, rows)
    )
    partner = shift.get("partner")
    if partner is not None:
        sizes = ", ".join(f"{size:.2f} at {_level(k)}" for k, size in partner["mean_size"].items())
        lone = partner["singleton_and_not_flagged"]
        text += (
            f"\n\n{partner['dataset']} test set ({partner['n']:,} inputs, none of them of our classes): "
            f"mean set size {sizes}; `ood` flags {_pct(partner['ood_rate'], 1)}, `abstain` "
            f"{_pct(partner['abstain_rate'], 1)}; a singleton set with neither flag, the one answer a caller "
            f"would accept unreviewed, goes to {_pct(lone[key], 1)} of them at {_level(key)}."
        )
    return text


def _actionable(metrics: Mapping[str, Any]) -> list[str]:
    """The card's sections on calibrated probabilities, prediction sets, abstention and shift."""
    if "conformal" not in metrics:
        return []
    return [
        "## Calibrated probabilities (temperature scaling)",
        _calibration(metrics["calibration"]),
        "## Prediction sets with a coverage guarantee",
        _conformal(metrics["conformal"]),
        f"![prediction sets]({PLOTS['conformal']})",
        "## Abstention",
        _abstention(metrics["abstention"]),
        f"![selective risk vs coverage]({PLOTS['risk_coverage']})",
        "## Under shift: rotated digits and out-of-distribution data",
        _shift(metrics["shift"]),
        f"![prediction sets under shift]({PLOTS['shift']})",
    ]


def render_card(manifest: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """card.md: what the model is, how it was trained, and every measured figure with its plot."""
    test, ood = metrics["test"], metrics.get("ood", {})
    samples = test["mc_samples"]
    sections = [
        f"# Model card: {manifest['name']} ({metrics['recipe']} recipe)",
        f"A dropout MLP classifying 28x28 {metrics['dataset']} images, served with Monte-Carlo-dropout "
        f"uncertainty (Gal & Ghahramani 2016). Architecture: {_architecture(manifest)}. All figures below "
        f"are measured on the untouched test set; choices and the OOD threshold use the validation split.",
        "## Headline",
        headline_table(metrics),
        "## Training",
        _training_section(manifest, metrics),
        f"![training curves]({PLOTS['training_curves']})",
        "## Test set: deterministic vs MC dropout, convergence in T",
        "Entropies in nats. MC results for each T use the first T of the same passes.",
        _convergence(test),
        f"![reliability diagram]({PLOTS['reliability']})",
        "## Selective prediction",
        f"Test error on the inputs kept after abstaining on the most uncertain share, by ranking "
        f"(MC rankings use T={samples}).",
        _selective(test),
        f"## Out-of-distribution detection: {metrics['dataset']} test vs {ood.get('dataset')} test",
        "Threshold-free separation by each score (higher = more out of distribution); "
        "max probability is reported both for the MC mean and for the deterministic net.",
        _ood(ood),
    ]
    if "histograms" in ood:
        sections.append(f"![entropy and MI in vs out of distribution]({PLOTS['ood']})")
    rotation = metrics["rotation"]
    sections += [
        "## Rotated digit (Gal & Ghahramani 2016, Figure 4)",
        f"Test digit #{rotation['digit']['test_index']} (a {rotation['digit']['true_label']}) rotated in "
        f"{len(rotation['angles'])} steps to {rotation['angles'][-1]:.0f}°, T={rotation['samples']}; "
        f"the last three columns average the first {rotation['population']['n']} test digits rotated the "
        f"same way. {_rotation_summary(rotation)}",
        _rotation(rotation),
        f"![rotation experiment]({PLOTS['rotation']})",
        *_actionable(metrics),
        "## Intended use and limitations",
        "- Inputs: single centred 28x28 grayscale images like the training set, light ink on a dark "
        "ground; the service's preprocessing brings other images to that form.\n"
        "- The `ood` flag is calibrated so that about 5% of in-distribution validation inputs are "
        "flagged; its detection rate is measured against one kind of shift only (the table above) and "
        "says nothing about others.\n"
        "- MC figures vary with T and the seed; they converge as the table shows.\n"
        "- Prediction sets cover the true label at their level only for inputs exchangeable with the "
        "validation data, at the T they were calibrated at; rotated digits and other datasets break "
        "that, as measured above. `abstain` keeps the validation risk at its target, which the test "
        "set may exceed slightly: it is an estimate, not a guarantee.\n"
        "- What dropout buys here, rate by rate, against L2, L1 and max-norm: `docs/dropout-study/`.\n"
        f"- Evaluation took {metrics.get('evaluation_seconds', 0):.0f} s after training.",
    ]
    return "\n\n".join(sections) + "\n"


def card_files(
    manifest: Mapping[str, Any], metrics: Mapping[str, Any], thumbnails: np.ndarray | None = None
) -> dict[str, bytes]:
    """{file name: content} for card.md and every plot it links."""
    files = {
        "card.md": render_card(manifest, metrics).encode(),
        PLOTS["training_curves"]: plots.training_curves(metrics["history"]),
        PLOTS["reliability"]: plots.reliability_diagram(
            metrics["test"]["reliability"], metrics["test"], metrics.get("calibration")
        ),
        PLOTS["rotation"]: plots.rotation_plot(metrics["rotation"], thumbnails),
    }
    if "conformal" in metrics:
        files[PLOTS["conformal"]] = plots.conformal_plot(metrics["conformal"])
        files[PLOTS["risk_coverage"]] = plots.risk_coverage_plot(metrics["abstention"])
        files[PLOTS["shift"]] = plots.shift_plot(metrics["shift"])
    ood = metrics.get("ood", {})
    if "histograms" in ood:
        files[PLOTS["ood"]] = plots.ood_histograms(ood, metrics["dataset"], ood["dataset"])
    return files
