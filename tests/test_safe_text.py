"""pinutil.cli.safe_text: what pinutil writes to a terminal of another's text (a PAM
module's prompt, pinutild's) has no control character left to obey."""
from __future__ import annotations

import unicodedata

from pinutil.cli.safe_text import MAX_CHARS, safe_text


def test_ordinary_prompts_pass_unchanged_with_their_trailing_space():
    for text in ("Password: ", "New PIN: ", "Passwort für jürgen: ", "密码："):
        assert safe_text(text) == text


def test_every_control_and_format_character_is_escaped_visibly():
    assert safe_text("\x1b]52;c;eA==\x07x") == "\\x1b]52;c;eA==\\x07x"
    assert safe_text("a\x9b2Jb\x7f\x00") == "a\\x9b2Jb\\x7f\\x00"
    assert safe_text("PIN\u202e: ") == "PIN\\u202e: "  # a bidirectional override
    assert safe_text("x\ud800") == "x\\ud800"  # a lone surrogate: encodable now
    every = safe_text("".join(map(chr, range(0x110000))), limit=None)
    assert not [c for c in every if unicodedata.category(c) in ("Cc", "Cf", "Cs")]
    every.encode()  # what os.write gets: no lone surrogate left to fail on


def test_whitespace_becomes_one_line_and_length_is_capped():
    assert safe_text("  one\nline\r\n\ttwo ") == "one line two "
    long = safe_text("y" * 10_000)
    assert len(long) == MAX_CHARS and long.endswith("...")
    assert len(safe_text("\x1b" * 10_000)) == MAX_CHARS
    assert safe_text("z" * 10_000, limit=None) == "z" * 10_000
