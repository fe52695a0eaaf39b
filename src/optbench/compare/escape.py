"""Strings from a store, made safe for where they are shown: one helper per output format.

A label, run name or failure reason is whatever someone logged to the store. In a terminal its control
characters (ESC, BEL, C1) could retitle the window or redraw the numbers of other rows; in markdown a
``|`` or newline could add a fake row, and HTML inside passes through to renderers; in a spreadsheet a
cell starting with ``=``, ``+``, ``-`` or ``@`` is a formula. Every renderer passes stored text through
the helper of its format; figures take ``terminal``'s text.
"""

from __future__ import annotations

import html
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _visible(match: re.Match) -> str:
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(match.group(), f"\\x{ord(match.group()):02x}")


def terminal(text: object) -> str:
    """Control characters (C0, DEL, C1; ESC among them) shown as ``\\x1b``-style escapes."""
    return _CONTROL.sub(_visible, str(text))


def markdown(text: object) -> str:
    """One table cell: control characters visible, HTML escaped, ``|`` and backslashes escaped."""
    return html.escape(terminal(text), quote=False).replace("\\", "\\\\").replace("|", "\\|")


def html_text(text: object) -> str:
    """Text in an HTML page: control characters visible, then HTML-escaped."""
    return html.escape(terminal(text))


def csv_cell(value: object) -> object:
    """A stored string that a spreadsheet would read as a formula gets a leading apostrophe; numbers pass."""
    if isinstance(value, str):
        value = terminal(value)
        return "'" + value if value.startswith(_FORMULA) else value
    return value
