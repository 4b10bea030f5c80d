"""`ldct serve`: start the MONAI Label server with the ldct_denoise app, secure by default.

Without ``--studies`` the server gets a local datastore folder holding one demo study (a
central slab of ircadb17 as NRRD when ../shared/data is present, else the phantom), so a new
user has something to denoise at once. Every route but /health needs a token of the token file
(`ldct.auth`); when the file holds none, the first start makes an admin token and prints it,
ready to paste into Slicer. ``--insecure-no-auth`` exists for loopback only.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ldct.auth import AUTH_FILE_ENV, TokenStore
from ldct.data import demo_case
from ldct.io import write_volume
from ldct.noise_level import LEVELS_ENV, NoiseLevels
from ldct.study.service import STUDY_ROOT_ENV

APP_DIR = Path(__file__).resolve().parents[1] / "apps" / "ldct_denoise"
LOG_CONFIG = APP_DIR / "logging.json"  # console logging (the service manager keeps it)
DEMO_STUDIES = Path.home() / ".cache" / "ldct" / "demo_studies"
INSECURE_ENV = "LDCT_INSECURE_NO_AUTH"
CORS_ENV = "LDCT_CORS_ORIGINS"
MAX_UPLOAD_ENV = "LDCT_MAX_UPLOAD_BYTES"
DEFAULT_MAX_UPLOAD_BYTES = 4 << 30  # an uncompressed int16 volume of 2 G voxels
QUEUE_LIMIT_ENV = "LDCT_QUEUE_LIMIT"
DEFAULT_QUEUE_LIMIT = 8
console = Console(stderr=False, highlight=False)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSettings:
    """What the server process enforces, from the environment `serve` gives it."""

    store: TokenStore | None  # None under --insecure-no-auth (loopback only)
    cors_origins: list[str]  # web origins allowed (none unless listed)
    max_upload_bytes: int  # larger request bodies are refused (413) while they arrive
    queue_limit: int  # denoising requests queued or running; more are answered 503


def server_settings() -> ServerSettings:
    """The server process's settings (``$LDCT_MAX_UPLOAD_BYTES``, default 4 GiB;
    ``$LDCT_QUEUE_LIMIT``, default 8)."""
    return ServerSettings(
        store=None if os.environ.get(INSECURE_ENV) == "1" else TokenStore(),
        cors_origins=[o.strip() for o in os.environ.get(CORS_ENV, "").split(",") if o.strip()],
        max_upload_bytes=int(os.environ.get(MAX_UPLOAD_ENV) or DEFAULT_MAX_UPLOAD_BYTES),
        queue_limit=int(os.environ.get(QUEUE_LIMIT_ENV) or DEFAULT_QUEUE_LIMIT))


def first_token(store: TokenStore, url: str) -> None:
    """On a token file without tokens, make an admin token and print it for Slicer."""
    if store.identities():
        console.print(f"tokens: {store.path} ({len(store.identities())}; `ldct token list`)")
        return
    token = store.add("admin", "admin")
    console.print(f"tokens: no token in {store.path}; made the admin token 'admin' (shown only "
                  "now; `ldct token add NAME --role radiologist` makes more). In 3D Slicer's "
                  f"Low-dose CT denoising module, enter server {url} and the token:")
    print(token, flush=True)  # a line of its own, never wrapped


def demo_studies(data_dir: Path = Path("../shared/data"), folder: Path = DEMO_STUDIES) -> Path:
    """A datastore folder with one demo CT (made once)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.nrrd")):
        name, volume, _ = demo_case(data_dir, 16)
        write_volume(volume, folder / f"{name}.nrrd", dtype="int16")
    return folder


def server_command(studies: str, host: str, port: int, models: str,
                   preload: bool = False) -> list[str]:
    """The monailabel start_server command line for the app (through the app's
    start_server.py: MONAI Label's command with ldct's HTTP protocol)."""
    return [sys.executable, str(APP_DIR / "start_server.py"), "start_server", "--app", str(APP_DIR),
            "--studies", studies, "--host", host, "--port", str(port),
            "--log_config", str(LOG_CONFIG),  # else MONAI Label leaves a copy in /tmp per start
            "--conf", "models", models, "--conf", "preload", str(preload).lower()]


def server_environment() -> dict[str, str]:
    """Settings for a denoising server: fine-tuning tasks on, no sessions, no auto reload."""
    env = {k: v for k, v in os.environ.items() if k not in (INSECURE_ENV, CORS_ENV, LEVELS_ENV)}
    env.update({"MONAI_LABEL_SESSIONS": "false",
                "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
                "MONAI_LABEL_TASKS_STRATEGY": "false", "MONAI_LABEL_TASKS_SCORING": "false",
                "MONAI_LABEL_TASKS_BATCH_INFER": "false"})
    return env


def serve(studies: str | None, host: str, port: int, models: str, preload: bool,
          study_root: str | None = None, insecure_no_auth: bool = False,
          cors_origins: list[str] | None = None, noise_levels: str | None = None) -> None:
    """Become the server process (exec), so that signals such as SIGTERM reach it directly.

    ``study_root``: the folder of the reader studies served under /study/ (default
    ``$LDCT_STUDY_ROOT`` or ~/.cache/ldct/reader_studies). ``insecure_no_auth``: no tokens,
    refused unless ``host`` is a loopback address. ``cors_origins``: web origins allowed.
    ``noise_levels``: a JSON file of the site's named noise levels (`ldct.noise_level`), checked
    here so that a bad file stops the start with its reason."""
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    env = server_environment()
    if insecure_no_auth:
        if not is_loopback(host):
            raise ValueError(f"--insecure-no-auth is for a loopback address only, not {host}: "
                             "any machine that reaches the server would have admin rights. "
                             "Drop the option and use tokens (`ldct token add`).")
        console.print("[bold red]WARNING: --insecure-no-auth: every local process and every web "
                      "page open in a browser on this machine can use this server as admin. "
                      "For development only.[/]")
        env[INSECURE_ENV] = "1"
    else:
        store = TokenStore()
        env[AUTH_FILE_ENV] = str(store.path.resolve())
        first_token(store, url)
    if cors_origins:
        env[CORS_ENV] = ",".join(cors_origins)
    if noise_levels:
        NoiseLevels.load(noise_levels)
        env[LEVELS_ENV] = str(Path(noise_levels).resolve())
    studies = studies or str(demo_studies())
    console.print(f"MONAI Label server for 3D Slicer: {url}  (studies: {studies})")
    command = server_command(studies, host, port, models, preload)
    if study_root:
        env[STUDY_ROOT_ENV] = str(Path(study_root).resolve())
    sys.stdout.flush()  # exec discards Python's buffers
    os.execve(command[0], command, env)
