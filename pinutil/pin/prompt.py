"""The PIN prompt's text: one for every backend, and the check that a text the service
sent is one of them.

tpm_pin asks `prompt_text` for the direct and helper backends; pinutild sends it in its
pin-login conversation (docs/pinutild.md), where tpm_pin shows it only if
`known_prompt` gives it back. No imports: a login through the service loads this
(tests/test_import_budget.py).
"""
from __future__ import annotations


def prompt_text(failures: int, attempts_left: int) -> str:
    """The PIN prompt for a status: how many attempts are left once one was wrong. One
    text for every backend: tpm_pin asks it for the direct and helper backends, pinutild
    sends it in its pin-login conversation (docs/pinutild.md)."""
    if failures == 0:
        return "PIN: "
    if attempts_left == 1:
        return "PIN (last attempt): "
    return f"PIN ({attempts_left} attempts left): "


_LEFT = ("PIN (", " attempts left): ")


def known_prompt(text: str) -> str | None:
    """`text` when it is one of prompt_text's, rebuilt from its number; else None.
    pinutild sends its prompt as text (pin-login): a PAM host shows only these, never
    text of the service's choosing (phishing, a terminal's escape sequences)."""
    if text in ("PIN: ", "PIN (last attempt): "):
        return prompt_text(0 if text == "PIN: " else 1, 1)
    number = text[len(_LEFT[0]):-len(_LEFT[1])] if (
        text.startswith(_LEFT[0]) and text.endswith(_LEFT[1])) else ""
    if not (1 <= len(number) <= 3 and number.isascii() and number.isdigit()
            and number[0] != "0" and int(number) >= 2):
        return None
    return prompt_text(1, int(number))
