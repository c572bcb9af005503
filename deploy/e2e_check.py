"""Check a dropserve answer read from stdin (for deploy/ci-docker-e2e.sh).

usage: e2e_check.py predict|uncertainty TRUE_LABEL < response.json
"""

import json
import math
import sys

UNCERTAINTY_FIELDS = (
    "std",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "variation_ratio",
    "ood",
)


def main() -> None:
    kind, true_label = sys.argv[1], int(sys.argv[2])
    body = json.load(sys.stdin)
    (prediction,) = body["predictions"]
    assert prediction["label"] == true_label, f"predicted {prediction['label']}, true label {true_label}"
    assert math.isclose(sum(prediction["probabilities"]), 1.0, abs_tol=1e-3), "probabilities do not sum to 1"
    summary = f"label={prediction['label']} confidence={prediction['confidence']:.4f}"
    if kind == "uncertainty":
        missing = [field for field in UNCERTAINTY_FIELDS if field not in prediction]
        assert not missing, f"uncertainty answer lacks {missing}"
        assert prediction["mutual_information"] >= 0.0
        assert prediction["predictive_entropy"] >= prediction["mutual_information"] - 1e-6
        summary += (
            f" samples={body['samples']} mutual_information={prediction['mutual_information']:.4f}"
            f" predictive_entropy={prediction['predictive_entropy']:.4f} ood={prediction['ood']}"
        )
    print(f"{kind} ok: model={body['model']['name']}/{body['model']['version']} {summary}")


if __name__ == "__main__":
    main()
