"""Schema fuzzing: schemathesis generates requests from the service's own /openapi.json (examples,
boundary values, then random valid and invalid bodies, query and path parameters, and stateful
sequences) against a real `python -m service`. No answer may be a 5xx, and every answer must be one
the document describes: its status, content type, headers and body schema.

Bounded here: FUZZ_EXAMPLES per operation (10 by default: about a thousand requests, under a minute);
`make fuzz` runs more. The CLI, not schemathesis' pytest plugin, which does not load under pytest 9.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import publish_tiny
from tests.server import running_server

EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "10")
SEED = os.environ.get("FUZZ_SEED", "18")  # fixed in CI: the same requests every run
ADMIN_KEY = "fuzz-admin-key-0123456789"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]


def test_no_5xx_and_every_answer_as_documented(tmp_path: Path):
    repository = tmp_path / "artifacts"
    publish_tiny(repository)
    publish_tiny(repository, seed=1)
    limits = {"mc_samples_max": "2000", "max_instances": "16"}  # bounded work per generated request
    with running_server(
        repository, tmp_path / "server.log", access_log="false", admin_key=ADMIN_KEY, **limits
    ) as server:
        command = [
            str(Path(sys.executable).with_name("st")), "run", f"{server.url}/openapi.json",
            "--max-examples", EXAMPLES, "--checks", ",".join(CHECKS), "--seed", SEED,
            "--header", f"Authorization: Bearer {ADMIN_KEY}", "--request-timeout", "30",
            "--generation-database", "none", "--no-color", "--workers", "1",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
        log_text = server.log_text()
    summary = result.stdout[result.stdout.rfind("SUMMARY") :]
    print(summary)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert " passed" in summary and "failures" not in summary
    assert "Traceback" not in log_text and " 500 for " not in log_text
