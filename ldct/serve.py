"""`ldct serve`: start the MONAI Label server with the ldct_denoise app.

Without ``--studies`` the server gets a local datastore folder holding one demo study (a
central slab of ircadb17 as NRRD when ../shared/data is present, else the phantom), so a new
user has something to denoise at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ldct.data import demo_case
from ldct.io import write_volume
from ldct.study.service import STUDY_ROOT_ENV

APP_DIR = Path(__file__).resolve().parents[1] / "apps" / "ldct_denoise"
DEMO_STUDIES = Path.home() / ".cache" / "ldct" / "demo_studies"


def demo_studies(data_dir: Path = Path("../shared/data"), folder: Path = DEMO_STUDIES) -> Path:
    """A datastore folder with one demo CT (made once)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.nrrd")):
        name, volume, _ = demo_case(data_dir, 16)
        write_volume(volume, folder / f"{name}.nrrd", dtype="int16")
    return folder


def server_command(studies: str, host: str, port: int, models: str,
                   preload: bool = False) -> list[str]:
    """The monailabel start_server command line for the app."""
    return [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR),
            "--studies", studies, "--host", host, "--port", str(port),
            "--conf", "models", models, "--conf", "preload", str(preload).lower()]


def server_environment() -> dict[str, str]:
    """Settings for a denoising server: fine-tuning tasks on, no sessions, no auto reload."""
    env = dict(os.environ)
    env.update({"MONAI_LABEL_SESSIONS": "false",
                "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
                "MONAI_LABEL_TASKS_STRATEGY": "false", "MONAI_LABEL_TASKS_SCORING": "false",
                "MONAI_LABEL_TASKS_BATCH_INFER": "false"})
    return env


def serve(studies: str | None, host: str, port: int, models: str, preload: bool,
          study_root: str | None = None) -> None:
    """Become the server process (exec), so that signals such as SIGTERM reach it directly.

    ``study_root``: the folder of the reader studies served under /study/ (default
    ``$LDCT_STUDY_ROOT`` or ~/.cache/ldct/reader_studies)."""
    studies = studies or str(demo_studies())
    print(f"MONAI Label server for 3D Slicer: http://{'127.0.0.1' if host == '0.0.0.0' else host}"
          f":{port}  (studies: {studies})", flush=True)
    command = server_command(studies, host, port, models, preload)
    env = server_environment()
    if study_root:
        env[STUDY_ROOT_ENV] = str(Path(study_root).resolve())
    os.execve(command[0], command, env)
