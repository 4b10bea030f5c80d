"""Pure-Python logic of the LowDoseCTDenoise module: no Slicer imports, standard library only
(Python 3.9+), so it runs and is tested outside Slicer."""

from .client import DenoiseClient, ModelEntry
from .connection import CancelToken
from .controller import (
    CONTROLS,
    SHORTCUTS,
    DenoiseController,
    PanelView,
    State,
    StudyController,
    StudyState,
    StudyView,
)
from .display import (
    LAYOUTS,
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

__all__ = ["AuthenticationFailed", "BackgroundCall", "CONTROLS", "CancelToken", "Cancelled",
           "DenoiseClient", "DenoiseController", "DenoiseJob", "LAYOUTS", "ModelEntry",
           "ModelMissing", "NotMonaiLabel", "PanelView", "ReaderSession",
           "RequestRejected", "SHORTCUTS", "ServerError", "ServerFailure",
           "ServerTimeout", "ServerUnreachable", "State", "StudyClient",
           "StudyController", "StudyState", "StudyView", "UrlHistory", "VOLUME_PRESET",
           "WINDOW_PRESETS", "difference_name", "result_name", "symmetric_window"]
