"""Text from elsewhere (pinutild, a PAM module's conversation), made safe to write to
a terminal or stderr: one line, every control character escaped visibly, length capped.

Why: a terminal obeys the bytes it is sent. A prompt or message carrying ESC, a C1
control or BEL can set the clipboard (OSC 52), the window title, hide what follows or
clear the screen; whoever runs as pinutild chooses the prompt texts `pinutil setup`
shows (review 2, G5). So each C0 and C1 control character and DEL (category Cc),
each Unicode format character (Cf: bidirectional overrides that reorder what is
shown, zero-width characters) and any lone surrogate (Cs) is written as `\\xNN` or
`\\uNNNN`: visible, never obeyed. Runs of whitespace (newlines among them) become one
space, so a message cannot draw lines of its own; a prompt's trailing space stays.
(pypam escapes its log lines the same way; pinutil never imports pypam.)
"""
from __future__ import annotations

import re
import unicodedata

#: Characters kept of one text; a longer one ends in "..." (the proof's prompts are
#: cut at 512 by the proof process, pinutild's errors at 300).
MAX_CHARS = 300
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_WHITESPACE = re.compile(r"\s+")


def _visible(char: str) -> str:
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(text: object, limit: int | None = MAX_CHARS) -> str:
    """`text` as one line without control characters (see the module docstring), at
    most `limit` characters (None: no cap, for pinutil's own lines)."""
    folded = _WHITESPACE.sub(" ", str(text)).lstrip()
    shown = "".join(_visible(char) for char in folded)
    if limit is not None and len(shown) > limit:
        return shown[:limit - 3] + "..."
    return shown
