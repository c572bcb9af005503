"""`make check-cuda`: train the seed recipe with `--device cuda`, serve it with DROPSERVE_DEVICE=cuda,
and check what a user relies on, on real MNIST test digits:

- predictions at least 95% accurate, with the CPU's labels (the artifact's eval forward on the CPU);
- an uncertainty request and seed give the same bytes twice, and beside 32 other clients (50 times
  per route), as on the CPU;
- random-noise images are flagged `ood` far more often than test digits.

Needs a CUDA device; exits 1 when a check fails, 2 when torch sees no GPU. CI has no GPU: run it
where one is, e.g. after changing training or the engine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.servers import Server, serving
from models.artifact import load_artifact
from models.mc_dropout import predict_logits
from training.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]
PORT = 8123
URL = f"http://127.0.0.1:{PORT}"


def train(artifacts: Path) -> Path:
    command = [sys.executable, "-m", "training", "--dataset", "mnist", "--recipe", "seed", "--device", "cuda"]
    subprocess.run([*command, "--artifacts", str(artifacts), "--no-progress"], check=True)
    return max((artifacts / "mnist-mlp").iterdir(), key=lambda p: int(p.name))


def post(client: httpx.Client, path: str, body: dict) -> bytes:
    response = client.post(path, json=body)
    response.raise_for_status()
    return response.content


def ood_share(client: httpx.Client, instances: list) -> float:
    """The share of `instances` an uncertainty answer flags `ood`."""
    answer = json.loads(post(client, "/v1/uncertainty", {"instances": instances}))
    return float(np.mean([p["ood"] for p in answer["predictions"]]))


def same_bytes_beside_crowd(
    client: httpx.Client, fixed: dict, lone: dict[str, bytes], images: np.ndarray
) -> bool:
    """`fixed` sent 50 times to each route of `lone` while 32 other clients send other digits to
    both routes: True when every body equals the lone answer's."""
    stop, statuses = threading.Event(), []

    def other_client(index: int) -> None:
        with httpx.Client(base_url=URL, timeout=60) as crowd:
            for n in itertools.count():
                if stop.is_set():
                    return
                image = images[1 + (index * 7919 + n) % (len(images) - 1)].tolist()
                if n % 2:
                    response = crowd.post("/v1/uncertainty", json={"instances": [image], "seed": n})
                else:
                    response = crowd.post("/v1/predict", json={"instances": [image]})
                statuses.append(response.status_code)

    with ThreadPoolExecutor(32) as pool:
        for index in range(32):
            pool.submit(other_client, index)
        time.sleep(1.0)  # the crowd is going
        same = all(post(client, path, fixed) == body for path, body in lone.items() for _ in range(50))
        stop.set()
    print(
        f"a fixed request 50 times per route beside 32 clients ({len(statuses)} other answers, "
        f"statuses {sorted(set(statuses))}): every body the lone one's: {same}"
    )
    return same


def check(version: Path, images: np.ndarray, labels: np.ndarray) -> bool:
    """images (N, 784) in [0, 1], labels (N,): every check printed, True when all hold."""
    with httpx.Client(base_url=URL, timeout=60) as client:
        answers = [
            json.loads(post(client, "/v1/predict", {"instances": images[i : i + 100].tolist()}))
            for i in range(0, len(images), 100)
        ]
        predicted = np.array([p["label"] for a in answers for p in a["predictions"]])
        probabilities = np.array([p["probabilities"] for a in answers for p in a["predictions"]])
        accuracy = float((predicted == labels).mean())

        loaded = load_artifact(version, device="cpu")
        with torch.inference_mode():
            cpu = torch.softmax(predict_logits(loaded.weights, torch.tensor(images)), -1).numpy()
        agree = float((cpu.argmax(-1) == predicted).mean())
        print(
            f"predict on cuda: {accuracy:.4f} accurate on {len(labels)} test digits; labels equal to the "
            f"CPU's for {agree:.4f}; probabilities within {np.abs(cpu - probabilities).max():.1e}"
        )

        fixed = {"instances": [images[0].tolist()], "samples": 100, "seed": 42}
        lone = {path: post(client, path, fixed) for path in ("/v1/predict", "/v1/uncertainty")}
        repeated = post(client, "/v1/uncertainty", fixed) == lone["/v1/uncertainty"]
        # The OOD threshold is the validation digits' 95% quantile of mutual information: noise should
        # cross it far more often than test digits do.
        noise = np.random.default_rng(0).random((32, 784)).astype(np.float32)
        noise_ood = ood_share(client, noise.tolist())
        digits_ood = ood_share(client, images[:200].tolist())
        print(
            f"uncertainty on cuda: the same seed's body twice: {repeated}; flagged ood: "
            f"{noise_ood:.0%} of 32 noise images, {digits_ood:.0%} of 200 test digits"
        )

        same = same_bytes_beside_crowd(client, fixed, lone, images)
    return accuracy >= 0.95 and agree >= 0.99 and repeated and same and noise_ood >= 0.5 and digits_ood <= 0.2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="test digits to predict")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("torch sees no CUDA device: run make check-cuda on a machine with a GPU", file=sys.stderr)
        return 2
    print(f"on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    splits = load_dataset("mnist")
    images = (splits.x_test[: args.images].reshape(-1, 784) / 255.0).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="dropserve-cuda-") as folder:
        artifacts = Path(folder)
        started = time.perf_counter()
        version = train(artifacts)
        metrics = json.loads((version / "model.json").read_text())["metrics"]
        print(
            f"trained on cuda in {time.perf_counter() - started:.1f} s (the job's wall time, evaluation "
            f"included): test accuracy {metrics['test_accuracy']:.4f}, MC {metrics['test_accuracy_mc']:.4f}"
        )
        env = {"DROPSERVE_MODEL_REPOSITORY": str(artifacts), "DROPSERVE_DEVICE": "cuda"}
        env.update(DROPSERVE_PORT=str(PORT), DROPSERVE_HOST="127.0.0.1")
        server = Server("cuda", PORT, [sys.executable, "-m", "service"], ROOT, env, "/readyz", ())
        with serving(server, artifacts / "server.log"):
            passed = check(version, images, splits.y_test[: args.images])
    print("cuda check", "passed" if passed else "FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
