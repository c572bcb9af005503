"""The `dropserve` command.

    dropserve serve [--port 8000] [--workers 2] ...   python -m service, options as DROPSERVE_* settings
    dropserve train [ARGS...]                          python -m training ARGS (see dropserve train --help)
    dropserve predict FILE... [--model M] [--json]
    dropserve uncertainty FILE... [--samples 100] [--seed S] [--json]
    dropserve models [--json]

The client commands reach --url (default DROPSERVE_URL, else http://127.0.0.1:8000) with
--api-key (default DROPSERVE_API_KEY), print a table, or the answer as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import httpx

from client.errors import DropserveError
from client.http import DEFAULT_URL, Client
from client.types import PredictResponse, UncertaintyResponse

# `dropserve serve` options, and the settings they stand for.
_SERVE_SETTINGS = {
    "host": "DROPSERVE_HOST",
    "port": "DROPSERVE_PORT",
    "workers": "DROPSERVE_WORKERS",
    "repository": "DROPSERVE_MODEL_REPOSITORY",
    "poll_interval": "DROPSERVE_POLL_INTERVAL_S",
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dropserve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (python -m service)")
    serve.add_argument("--host", help="interface to bind (DROPSERVE_HOST)")
    serve.add_argument("--port", type=int, help="TCP port (DROPSERVE_PORT)")
    serve.add_argument("--workers", type=int, help="server processes (DROPSERVE_WORKERS)")
    serve.add_argument("--repository", help="model repository folder (DROPSERVE_MODEL_REPOSITORY)")
    serve.add_argument(
        "--poll-interval", type=float, help="rescan the repository every N s (DROPSERVE_POLL_INTERVAL_S)"
    )
    # Never parsed here (see main): all that follows `train` is python -m training's, --help too.
    commands.add_parser("train", help="train and publish a model (python -m training ARGS)")

    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url", default=None, help=f"the server (DROPSERVE_URL, else {DEFAULT_URL})")
    server.add_argument("--api-key", default=None, help="bearer key for inference (DROPSERVE_API_KEY)")
    server.add_argument("--json", action="store_true", help="print the answer as JSON")
    server.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    inference = argparse.ArgumentParser(add_help=False, parents=[server])
    inference.add_argument("files", nargs="+", metavar="FILE", help="images: PNG, JPEG, BMP, GIF, TIFF, WebP")
    inference.add_argument("--model", help="model name (default: the server's default model)")
    inference.add_argument("--version", type=int, help="pin a version of --model")

    commands.add_parser("predict", parents=[inference], help="deterministic predictions for images")
    uncertainty = commands.add_parser(
        "uncertainty", parents=[inference], help="MC-dropout uncertainty for images"
    )
    uncertainty.add_argument("--samples", type=int, default=100, help="MC passes (default 100)")
    uncertainty.add_argument("--seed", type=int, help="for a reproducible answer (default: the server picks)")
    commands.add_parser("models", parents=[server], help="the models served and their versions")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        return delegate("training", argv[1:], None)
    args = parse_args(argv)
    if args.command == "serve":
        chosen = {env: str(getattr(args, key)) for key, env in _SERVE_SETTINGS.items() if getattr(args, key)}
        return delegate("service", [], {**os.environ, **chosen})
    try:
        with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            return run_client_command(client, args)
    except DropserveError as error:
        print(f"dropserve: {error}", file=sys.stderr)
    except httpx.TransportError as error:
        where = args.url or os.environ.get("DROPSERVE_URL") or DEFAULT_URL
        print(f"dropserve: cannot reach {where}: {error} (is `dropserve serve` running?)", file=sys.stderr)
    except OSError as error:  # an unreadable FILE
        print(f"dropserve: {error}", file=sys.stderr)
    return 1


def delegate(module: str, args: list[str], env: dict[str, str] | None) -> int:
    """`python -m module args` in a child process with this interpreter; its exit status."""
    with subprocess.Popen([sys.executable, "-m", module, *args], env=env) as process:
        try:
            return process.wait()
        except KeyboardInterrupt:  # the child had the same Ctrl-C: let it shut down cleanly
            return process.wait()


def run_client_command(client: Client, args: argparse.Namespace) -> int:
    if args.command == "models":
        models = client.models()
        if args.json:
            print(json.dumps([asdict(m) for m in models], indent=2))
        else:
            rows = [[m.name, ", ".join(map(str, m.versions)), str(m.default_version)] for m in models]
            print(table(["MODEL", "VERSIONS", "DEFAULT"], rows))
        return 0
    if args.command == "predict":
        predicted = client.predict(*args.files, model=args.model, version=args.version)
        print(as_json(predicted, args.files) if args.json else predict_table(predicted, args.files))
        return 0
    answer = client.uncertainty(
        *args.files, samples=args.samples, seed=args.seed, model=args.model, version=args.version
    )
    print(as_json(answer, args.files) if args.json else uncertainty_table(answer, args.files))
    return 0


def predict_table(answer: PredictResponse, files: list[str]) -> str:
    rows = [
        [file, str(p.label), p.class_name, f"{p.confidence:.4f}"]
        for file, p in zip(files, answer.predictions, strict=True)
    ]
    model = f"{answer.model.name} version {answer.model.version}"
    return f"{table(['FILE', 'LABEL', 'CLASS', 'CONFIDENCE'], rows)}\n{model}"


def uncertainty_table(answer: UncertaintyResponse, files: list[str]) -> str:
    rows = [
        [
            file,
            str(p.label),
            p.class_name,
            f"{p.confidence:.4f}",
            f"{p.predictive_entropy:.4f}",
            f"{p.mutual_information:.4f}",
            "yes" if p.ood else "no",
        ]
        for file, p in zip(files, answer.predictions, strict=True)
    ]
    header = ["FILE", "LABEL", "CLASS", "CONFIDENCE", "ENTROPY", "MUTUAL_INFO", "OOD"]
    model = f"{answer.model.name} version {answer.model.version}"
    return (
        f"{table(header, rows)}\n{model}, {answer.samples} MC samples, seed {answer.seed} (entropies in nats)"
    )


def as_json(answer: PredictResponse | UncertaintyResponse, files: list[str]) -> str:
    """The answer with each prediction's file; fields the answer does not carry are left out."""
    body: dict[str, Any] = {k: v for k, v in asdict(answer).items() if v is not None}
    body["predictions"] = [
        {"file": file, **{k: v for k, v in prediction.items() if v is not None}}
        for file, prediction in zip(files, body["predictions"], strict=True)
    ]
    return json.dumps(body, indent=2)


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    sys.exit(main())
