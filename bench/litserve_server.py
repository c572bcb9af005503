"""LitServe serving the identical weights, the peer in `make bench`; runs in bench's own venv.

Usage: python -m bench.litserve_server ARTIFACT_DIR PORT (from the repository root, which puts
`models` on the path: the same loader and DropoutMLP as dropserve).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
import torch

from models.artifact import load_artifact


class MnistAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        """Load model.safetensors + model.json into the DropoutMLP, eval mode."""
        torch.set_num_threads(1)
        loaded = load_artifact(Path(sys.argv[1]), "cpu")
        self.model = loaded.model.eval()
        self.classes = loaded.manifest.class_names

    def decode_request(self, request):  # untyped on purpose: LitServe validates annotated bodies
        """{"instances": [784 floats]} -> (1, 784)."""
        return torch.from_numpy(np.asarray(request["instances"], dtype=np.float32).reshape(-1, 784))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode softmax probabilities."""
        with torch.inference_mode():
            return torch.softmax(self.model(x), dim=-1)

    def encode_response(self, probabilities: torch.Tensor) -> dict[str, Any]:
        """The same body shape as dropserve's predict."""
        rows = probabilities.tolist()
        predictions = []
        for row in rows:
            label = max(range(len(row)), key=row.__getitem__)
            predictions.append(
                {
                    "label": label,
                    "class_name": self.classes[label],
                    "confidence": row[label],
                    "probabilities": row,
                }
            )
        return {"predictions": predictions}


if __name__ == "__main__":
    server = ls.LitServer(
        MnistAPI(), accelerator="cpu", devices=1, workers_per_device=1, api_path="/v1/predict"
    )
    server.run(
        host="127.0.0.1",
        port=int(sys.argv[2]),
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
    )
