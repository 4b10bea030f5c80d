"""Local server processes for tests and benchmarks: a free loopback port, a server started,
waited for (until a URL answers 200) and stopped, and a wait for a server's state."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def serve_command(studies: str, port: int, *extra: str) -> list[str]:
    """`ldct serve` as a user starts it."""
    return [sys.executable, "-m", "ldct.cli", "serve", "--studies", studies,
            "--port", str(port), *extra]


@contextlib.contextmanager
def running(command: list[str], ready_url: str, log_path: Path, env: dict | None = None,
            timeout_s: float = 180) -> Iterator[subprocess.Popen]:
    """Start a server process; yield once ``ready_url`` answers 200; terminate it afterwards."""
    log = open(log_path, "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited early; see {log_path}")
            try:
                if requests.get(ready_url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready in {timeout_s} s; see {log_path}")
            time.sleep(0.5)  # polling interval while waiting for start-up, not synchronization
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def wait_for(condition, what: str, timeout_s: float = 60.0):
    """``condition()``'s first true value, polled until ``timeout_s`` (then AssertionError)."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.05)  # polling a server's state, not synchronization
    return value
