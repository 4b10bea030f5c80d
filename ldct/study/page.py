"""The browser reader page: its static files, served by name from an allow-list, and the
headers they go out with.

The page and its script carry no data and no secret, so they are the only study routes served
without a token (a browser cannot send a header when it opens a link). The reader's token
reaches the page in the link's fragment (``/study/_reader/#token=...``): browsers never send a
fragment to a server or in a Referer, so it is in no access log; the script moves it to the
tab's sessionStorage (a reload resumes, closing the tab forgets it), removes it from the
address bar and sends it only as ``Authorization: Bearer`` to the study routes, which check it
as for the Slicer panel. A strict Content-Security-Policy allows the page's own script and
style only (no inline code, no other origin), and no page may frame it.
"""

from __future__ import annotations

from pathlib import Path

PAGE_PATH = "/study/_reader"  # "_" never occurs in a study id
FOLDER = Path(__file__).with_name("web")
ASSETS = {"": ("reader.html", "text/html; charset=utf-8"),
          "reader.js": ("reader.js", "text/javascript; charset=utf-8"),
          "reader.css": ("reader.css", "text/css; charset=utf-8")}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and media type of the page's file ``name`` ('' is the page), None for any
    other name (no client-given name reaches the file system)."""
    entry = ASSETS.get(name)
    if entry is None:
        return None
    return (FOLDER / entry[0]).read_bytes(), entry[1]
