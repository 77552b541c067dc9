"""Keep the API key out of error messages, whatever form the endpoint echoes it in.

Endpoints and proxies quote what they received: the key as sent, upper-cased, inside a
base64 ``Authorization: Basic`` value, or cut short ("sk-abc...xyz"). Any run of 8 or more
characters of the key (case-insensitive), or of its base64 forms, is replaced. A key shorter
than 8 characters is not a secret worth hiding (local servers use ``x``) and replacing it
would shred ordinary words in the message, so it is left alone.
"""

from __future__ import annotations

import base64

__all__ = ["MIN_SECRET", "Redactor"]

#: Keys shorter than this are not redacted; runs this long of a key always are.
MIN_SECRET = 8

REDACTED = "<redacted>"


def _grams(text: str, size: int = MIN_SECRET) -> set[str]:
    text = text.lower()
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def _base64_forms(key: bytes) -> list[str]:
    """The key's base64 text at each of the three byte alignments it can have in a longer
    encoded value, minus the edge characters that depend on the neighbouring bytes."""
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + key).decode()
        start = -(-offset * 4 // 3) + (1 if offset else 0)
        core = encoded.rstrip("=")[start:-2]
        forms += [core, core.replace("+", "-").replace("/", "_")]
    return forms


class Redactor:
    """Replaces every trace of one key in a text with ``<redacted>``."""

    def __init__(self, key: str | None) -> None:
        self._grams: set[str] = set()
        if key:  # a key shorter than MIN_SECRET has no run that long: never redacted
            for form in [key, *_base64_forms(key.encode())]:
                self._grams |= _grams(form)

    def __call__(self, text: str) -> str:
        if not self._grams:
            return text
        # Per character, so indices line up even where lower() changes a length ("İ").
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        hidden = [False] * len(text)
        for i in range(len(text) - MIN_SECRET + 1):
            if lowered[i : i + MIN_SECRET] in self._grams:
                hidden[i : i + MIN_SECRET] = [True] * MIN_SECRET
        if not any(hidden):
            return text
        out: list[str] = []
        for i, char in enumerate(text):
            if not hidden[i]:
                out.append(char)
            elif i == 0 or not hidden[i - 1]:
                out.append(REDACTED)
        return "".join(out)
