"""The inference process: `python -m service.worker --socket-fd N ...`, started by the server.

It holds its own copy of the models and computes every batch the server's inference thread sends
over a socket (service.wire frames), then answers with the batch's arrays. Being its own process,
it has its own interpreter lock: its torch calls no longer wait on the event loop, and the event
loop no longer waits on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.artifact import load_artifact
from models.frozen import FrozenMLP
from service import wire
from service.inference import mc_summary, predict_probabilities
from service.logs import configure_logging
from service.runtime import keep_freed_memory, settle_heap

log = logging.getLogger("service.worker")  # not __main__, as `python -m` names it

Reply = tuple[dict[str, Any], list[np.ndarray]]


class ModelCache:
    """Artifact folder -> its network on this process's device. Versions never change once
    published, so a folder's network is loaded once and kept until the server lets it go."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.models: dict[str, FrozenMLP] = {}

    def get(self, path: str) -> FrozenMLP:
        model = self.models.get(path)
        if model is None:
            model = self.models[path] = load_artifact(Path(path), self.device).frozen
            log.info("inference process loaded %s", path)
        return model

    def keep(self, paths: list[str]) -> None:
        """Load these folders, and drop every other one (a version the server no longer serves)."""
        self.models = {path: self.get(path) for path in paths}


def handle(header: dict[str, Any], arrays: list[np.ndarray], cache: ModelCache) -> Reply:
    """One request frame -> its reply frame."""
    operation = header.get("op")
    if operation == "predict":
        return {}, [predict_probabilities(cache.get(header["path"]), arrays[0])]
    if operation == "uncertainty":
        summary, probs = mc_summary(
            cache.get(header["path"]),
            arrays[0],
            header["samples"],
            header["seeds"],
            header["rows"],
        )
        statistics = [getattr(summary, field.name) for field in dataclasses.fields(summary)]
        return {}, [*statistics, probs] if header["return_samples"] else statistics
    if operation == "keep":
        cache.keep(header["paths"])
        return {"loaded": sorted(cache.models)}, []
    raise ValueError(f"unknown operation {operation!r}")


def serve(sock: socket.socket, cache: ModelCache) -> None:
    """Answer frames until the server closes the socket."""
    try:
        while (frame := wire.receive(sock)) is not None:
            try:
                reply = handle(*frame, cache)
            except Exception as e:  # the server answers this batch's requests with the error
                log.exception("a batch failed in the inference process")
                reply = {"error": f"{type(e).__name__}: {e}"}, []
            wire.send(sock, *reply)
    except (BrokenPipeError, ConnectionResetError):  # the server went away mid-answer
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__)
    parser.add_argument("--socket-fd", type=int, required=True, help="the socket to the server")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    args = parser.parse_args(argv)
    # Ctrl-C, and a SIGTERM sent to the server's whole process group (a supervisor, `kill --
    # -PGID`), reach this process too: it would die under the batches the server is still
    # draining. The server ends it once it has answered what is queued, by closing the socket; if
    # the server dies, the socket's end of file ends it all the same.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(args.log_format, args.log_level)
    torch.set_num_threads(args.torch_threads)
    keep_freed_memory()
    device = torch.device(args.device)
    torch.zeros(1, device=device)  # initialise the device now, not in the first request
    settle_heap()
    with socket.socket(fileno=args.socket_fd) as sock:
        wire.send(sock, {"ready": True, "pid": os.getpid()})
        serve(sock, ModelCache(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
