"""The client talks HTTP only: importing it loads neither the service, the training code nor torch."""

from __future__ import annotations

import subprocess
import sys


def test_the_client_imports_no_server_code():
    check = (
        "import sys, client, client.cli; "
        "server = {'service', 'training', 'models', 'torch', 'fastapi'}; "
        "loaded = {m.split('.')[0] for m in sys.modules} & server; "
        "print(sorted(loaded))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
