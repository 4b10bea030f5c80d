"""Pure-Python logic of the LowDoseCTDenoise module: no Slicer imports, standard library only
(Python 3.9+), so it runs and is tested outside Slicer."""

from .client import CancelToken, DenoiseClient, ModelEntry
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
from .job import DenoiseJob

__all__ = ["AuthenticationFailed", "CancelToken", "Cancelled", "DenoiseClient", "DenoiseJob",
           "ModelEntry", "ModelMissing", "NotMonaiLabel", "RequestRejected", "ServerError",
           "ServerFailure", "ServerTimeout", "ServerUnreachable", "UrlHistory", "VOLUME_PRESET",
           "WINDOW_PRESETS", "difference_name", "result_name", "symmetric_window"]
