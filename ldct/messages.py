"""How an error message shows text it was given (a client's value, a file's cell): clipped,
never whole, since such values can be huge."""

from __future__ import annotations


def clip(text: str, limit: int = 60) -> str:
    """``text`` as a message shows it: its first ``limit`` characters, and its length when
    longer."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
