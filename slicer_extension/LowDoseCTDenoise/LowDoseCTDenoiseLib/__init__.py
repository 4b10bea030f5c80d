"""Pure-Python logic of the LowDoseCTDenoise module: no Slicer imports, standard library only
(Python 3.9+), so it runs and is tested outside Slicer."""

from .client import DenoiseClient, ModelEntry
from .connection import CancelToken
from .display import (
    VOLUME_PRESET,
    WINDOW_PRESETS,
    UrlHistory,
    difference_name,
    result_name,
    symmetric_window,
)
from .errors import (
    AuthenticationFailed,
    Cancelled,
    ModelMissing,
    NotMonaiLabel,
    RequestRejected,
    ServerError,
    ServerFailure,
    ServerTimeout,
    ServerUnreachable,
)
from .job import BackgroundCall, DenoiseJob
from .study import ReaderSession, StudyClient

__all__ = ["AuthenticationFailed", "BackgroundCall", "CancelToken", "Cancelled",
           "DenoiseClient", "DenoiseJob", "ModelEntry", "ModelMissing", "NotMonaiLabel",
           "ReaderSession", "RequestRejected", "ServerError", "StudyClient", "ServerFailure",
           "ServerTimeout", "ServerUnreachable", "UrlHistory", "VOLUME_PRESET", "WINDOW_PRESETS",
           "difference_name", "result_name", "symmetric_window"]
