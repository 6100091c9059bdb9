"""Conversation messages and responses, as modules see them.

Plain classes rather than dataclasses: `import dataclasses` pulls in `inspect` and
costs ~7 ms, paid by every process that authenticates.
"""
from .constants import PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON


class Message:
    """One message for the application's conversation function."""

    __slots__ = ("style", "text")

    def __init__(self, style: int, text: str) -> None:
        self.style = style
        self.text = text

    @classmethod
    def prompt(cls, text: str, echo: bool = False) -> "Message":
        return cls(PAM_PROMPT_ECHO_ON if echo else PAM_PROMPT_ECHO_OFF, text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and (self.style, self.text) == (other.style, other.text)

    def __repr__(self) -> str:
        return f"Message(style={self.style}, text={self.text!r})"


class Response:
    """The application's answer to one Message; `resp` is None when it gave none."""

    __slots__ = ("resp", "retcode")

    def __init__(self, resp: str | None, retcode: int = 0) -> None:
        self.resp = resp
        self.retcode = retcode

    def __repr__(self) -> str:  # never show an answer (it may be a PIN) in logs
        shown = None if self.resp is None else "<hidden>"
        return f"Response(resp={shown}, retcode={self.retcode})"
