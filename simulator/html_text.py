"""Text from the report document made safe for HTML and inline SVG, in text and in quoted attributes."""

from __future__ import annotations

import html
import re

# Characters HTML forbids in a document (C0/C1 controls except tab, newline, carriage return) and lone
# surrogates, which would make the page fail to encode as UTF-8 when written: replaced, never passed on.
_NOT_IN_HTML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def esc(value: object) -> str:
    """Any document value as text for an element's content or a double- or single-quoted attribute."""
    return html.escape(_NOT_IN_HTML.sub("\ufffd", str(value)), quote=True)
