"""Crash-safe training: SIGKILL mid-run, `--resume`, and the final weights are bit-identical to a
run never interrupted; a killed run never leaves a version (whole or partial) in the repository."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from models.artifact import list_versions, load_artifact, scan_repository
from training.checkpoint import PREFIX, CheckpointError, latest_checkpoint
from training.loop import train
from training.recipes import Recipe

# A training run on fixed random tensors (the loop does not care where pixels come from), with
# each optimizer, schedule and dropout kind the recipes use: Adam, and SGD with momentum, cosine
# schedule, input dropout and max-norm.
RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    from models.network import DropoutMLP
    from models.spec import MLPSpec
    from training import checkpoint, loop
    from training.recipes import Recipe

    def recipe(kind):
        if kind == "adam":
            return Recipe("adam", MLPSpec(hidden_sizes=(32,)), batch_size=32, epochs=4, validation_size=64)
        spec = MLPSpec(hidden_sizes=(32, 16), input_dropout=0.2, max_norm=3.0)
        return Recipe("sgd", spec, optimizer="sgd", learning_rate=0.05, momentum=0.9, batch_size=32,
                      epochs=4, schedule="cosine", validation_size=64)

    def run(kind, folder, resume, die_after=None, die_in_write=None):
        torch.set_num_threads(1)
        data = torch.Generator().manual_seed(123)
        x, y = torch.rand(640, 784, generator=data), torch.randint(0, 10, (640,), generator=data)
        torch.manual_seed(7)
        model = DropoutMLP(recipe(kind).spec)
        save = checkpoint.save_checkpoint
        def dying_save(folder, epoch, *args):
            if epoch == die_in_write:  # killed after the files are written, before the rename
                real_rename = os.rename
                os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
                save(folder, epoch, *args)
                os.rename = real_rename
            path = save(folder, epoch, *args)
            if epoch == die_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return path
        loop.save_checkpoint = dying_save
        loop.train(model, recipe(kind), x[:576], y[:576], x[576:], y[576:], seed=7, progress=False,
                   checkpoints=Path(folder), resume=resume)
        return model
    """
)


def run_in_child(
    tmp_path: Path, kind: str, folder: Path, resume: bool, **die: int
) -> subprocess.CompletedProcess:
    """The run in a child process; with die_after=N (or die_in_write=N) it kills itself with
    SIGKILL right after (or while) writing epoch N's checkpoint. Writes the final weights' digest."""
    out = tmp_path / f"digest-{kind}"
    code = RUN + textwrap.dedent(
        f"""
        model = run({kind!r}, {str(folder)!r}, {resume}, **{die!r})
        import hashlib
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode() + tensor.numpy().tobytes())
        Path({str(out)!r}).write_text(digest.hexdigest())
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    result.digest = out.read_text() if out.exists() else None  # type: ignore[attr-defined]
    out.unlink(missing_ok=True)
    return result


def digest_of(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    return digest.hexdigest()


def reference_digest(tmp_path: Path, kind: str, monkeypatch) -> str:
    """The uninterrupted run, in this process (one torch thread, as in the child)."""
    from training import loop

    monkeypatch.setattr(loop, "save_checkpoint", loop.save_checkpoint)  # RUN replaces it; undone after
    namespace: dict = {}
    exec(RUN, namespace)
    return digest_of(namespace["run"](kind, tmp_path / f"reference-{kind}", False))


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_sigkill_then_resume_gives_bit_identical_weights(tmp_path: Path, kind: str, one_thread, monkeypatch):
    reference = reference_digest(tmp_path, kind, monkeypatch)
    folder = tmp_path / "killed"
    killed = run_in_child(tmp_path, kind, folder, resume=False, die_after=2)
    assert killed.returncode == -signal.SIGKILL and killed.digest is None
    assert latest_checkpoint(folder) == folder / f"{PREFIX}2"
    if kind == "sgd":  # once is enough: killed again, while writing epoch 3's checkpoint
        killed_again = run_in_child(tmp_path, kind, folder, resume=True, die_in_write=3)
        assert killed_again.returncode == -signal.SIGKILL
        assert latest_checkpoint(folder) == folder / f"{PREFIX}2", "a half-written checkpoint is never used"
        assert [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")], (
            "the killed write's leftovers"
        )

    resumed = run_in_child(tmp_path, kind, folder, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.digest == reference
    assert [p.name for p in folder.iterdir()] == [f"{PREFIX}4"], "only the newest checkpoint is kept"


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path):
    torch.manual_seed(0)
    from models.network import DropoutMLP
    from models.spec import MLPSpec

    recipe = Recipe("r", MLPSpec(hidden_sizes=(8,)), epochs=1, batch_size=32)
    x, y = torch.rand(96, 784), torch.randint(0, 10, (96,))
    model = DropoutMLP(recipe.spec)

    def run(seed: int, resume: bool) -> None:
        train(
            model,
            recipe,
            x[:64],
            y[:64],
            x[64:],
            y[64:],
            seed=seed,
            progress=False,
            checkpoints=tmp_path,
            resume=resume,
        )

    run(seed=1, resume=False)
    with pytest.raises(CheckpointError, match="another run"):
        run(seed=2, resume=True)
    (tmp_path / f"{PREFIX}1" / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match="unreadable"):
        run(seed=1, resume=True)


def weights_digest(version: Path) -> str:
    return digest_of(load_artifact(version).model)


@pytest.mark.integration
def test_python_m_training_killed_and_resumed_publishes_the_same_model(tmp_path: Path):
    """The command itself on real MNIST: killed by SIGKILL at an arbitrary moment of its second
    epoch, then `--resume`: one version, the weights of an uninterrupted run."""
    command = [
        sys.executable, "-m", "training", "--train-limit", "20000", "--epochs", "3", "--threads", "1",
        "--mc-samples", "5", "--no-progress", "--seed", "3",
    ]  # fmt: skip
    reference = subprocess.run(
        [*command, "--artifacts", str(tmp_path / "reference")], capture_output=True, timeout=600
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    artifacts = tmp_path / "artifacts"
    checkpoints = artifacts / ".checkpoints" / "mnist-mlp"
    job = subprocess.Popen([*command, "--artifacts", str(artifacts)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while latest_checkpoint(checkpoints) is None:  # epoch 1 done: the kill lands in epoch 2
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = latest_checkpoint(checkpoints)
    assert done is not None and int(done.name.removeprefix(PREFIX)) < 3, "killed mid-training"
    assert scan_repository(artifacts) == {} and list_versions(artifacts / "mnist-mlp") == []

    resumed = subprocess.run(
        [*command, "--artifacts", str(artifacts), "--resume"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    assert scan_repository(artifacts) == {"mnist-mlp": [1]}
    assert not checkpoints.exists(), "a published run leaves no checkpoint behind"
    assert weights_digest(artifacts / "mnist-mlp" / "1") == weights_digest(
        tmp_path / "reference" / "mnist-mlp" / "1"
    )
    history = json.loads((artifacts / "mnist-mlp" / "1" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
