"""What the views show: window presets, layouts, view labels, node names, the difference window,
the URL history."""

from __future__ import annotations

from typing import Iterable, Optional

# (width, level) in HU. "Liver narrow" W150/L60 ([-15, 135] HU) is the window in which liver
# lesion conspicuity and residual noise are judged: it spans unenhanced (about 55 HU) and
# portal-venous (about 100-120 HU) liver, and shows noise about three times as strongly as W400.
WINDOW_PRESETS = {"Liver": (400.0, 40.0), "Liver narrow": (150.0, 60.0),
                  "Abdomen": (350.0, 40.0)}
VOLUME_PRESET = "Volume"  # the window the volume came with (e.g. from its DICOM header)

# Layouts: rows of slice views, each (view name, orientation, what it shows). Red and Yellow
# are Slicer's own views (linked and hot-linked by the Logic); Green2 is made by the layout.
ORIGINAL, RESULT = "original", "result"
LAYOUTS = {
    "Side by side": ((("Red", "Axial", ORIGINAL), ("Yellow", "Axial", RESULT)),),
    "Axial + coronal": ((("Red", "Axial", ORIGINAL), ("Yellow", "Axial", RESULT)),
                        (("Green", "Coronal", ORIGINAL), ("Green2", "Coronal", RESULT))),
}
LAYOUT_ID_BASE = 74010  # Slicer's layout ids of LAYOUTS, in order (far from Slicer's own)
MIN_DIFFERENCE_WINDOW = 20.0


def strength_label(strength: float) -> str:
    """``s=0.8``: the strength as the views and node names show it."""
    return f"s={strength:.2f}".rstrip("0").rstrip(".")


def view_label(model: str, strength: float) -> str:
    """``vagan s=0.8``: the label of a view showing a result (the other says ``original``)."""
    return f"{model} {strength_label(strength)}"


def result_name(input_name: str, model: str, strength: float) -> str:
    """``CT vagan s=0.8``: results of other models or strengths never share a name."""
    return f"{input_name} {view_label(model, strength)}"


def layout_xml(rows: tuple) -> str:
    """Slicer's layout description of ``rows`` (see :data:`LAYOUTS`)."""
    def view(name: str, orientation: str) -> str:
        return (f'<item><view class="vtkMRMLSliceNode" singletontag="{name}"><property '
                f'name="orientation" action="default">{orientation}</property></view></item>')

    return ('<layout type="vertical">' + "".join(
        '<item><layout type="horizontal">' + "".join(view(n, o) for n, o, _ in row)
        + "</layout></item>" for row in rows) + "</layout>")


def difference_name(result: str) -> str:
    return f"{result} difference"


def symmetric_window(differences: Iterable[float], percentile: float = 99.0) -> tuple[float, float]:
    """(width, level 0) covering +-the given percentile of |difference|: removed noise shows as
    grey texture around mid-grey, and anatomy (which should be absent) stands out."""
    magnitudes = sorted(abs(float(v)) for v in differences)
    if not magnitudes:
        return MIN_DIFFERENCE_WINDOW, 0.0
    index = min(len(magnitudes) - 1, int(round(percentile / 100.0 * (len(magnitudes) - 1))))
    return max(2.0 * magnitudes[index], MIN_DIFFERENCE_WINDOW), 0.0


class UrlHistory:
    """Recently used server URLs, newest first, without duplicates, each with the token last
    used for it and whether the user said not to ask again before sending it a volume (all
    kept in Slicer settings, so a token is pasted and a server agreed to once)."""

    def __init__(self, urls: Iterable[str] = (), size: int = 10,
                 tokens: Optional[dict] = None, consented: Iterable[str] = ()) -> None:
        self.size = size
        self.urls: list[str] = []
        self.tokens: dict[str, str] = {}
        self.consented: list[str] = []
        for url in reversed(list(urls)):
            self.add(url, (tokens or {}).get(self._key(url), ""))
        for url in consented:
            self.consent(url)

    @staticmethod
    def _key(url: str) -> str:
        return url.strip().rstrip("/")

    def add(self, url: str, token: str = "") -> None:
        url = self._key(url)
        if not url:
            return
        self.urls = [url] + [u for u in self.urls if u != url]
        del self.urls[self.size:]
        if token:
            self.tokens[url] = token
        self.tokens = {u: t for u, t in self.tokens.items() if u in self.urls}
        self.consented = [u for u in self.consented if u in self.urls]

    def token(self, url: str) -> str:
        """The token last used with ``url`` ('' if none)."""
        return self.tokens.get(self._key(url), "")

    def consent(self, url: str) -> None:
        """Volumes may go to ``url`` without asking (a URL in the history only)."""
        url = self._key(url)
        if url in self.urls and url not in self.consented:
            self.consented.append(url)

    def consents(self, url: str) -> bool:
        return self._key(url) in self.consented
