"""Conversation messages and responses, as modules see them."""
from dataclasses import dataclass

from .constants import MessageStyle


@dataclass(frozen=True)
class Message:
    """One message for the application's conversation function."""

    style: int
    text: str

    @classmethod
    def prompt(cls, text: str, echo: bool = False) -> "Message":
        style = MessageStyle.PAM_PROMPT_ECHO_ON if echo else MessageStyle.PAM_PROMPT_ECHO_OFF
        return cls(int(style), text)


@dataclass(frozen=True)
class Response:
    """The application's answer to one Message; `resp` is None when it gave none."""

    resp: str | None
    retcode: int = 0

    def __repr__(self) -> str:  # never show an answer (it may be a PIN) in logs
        shown = None if self.resp is None else "<hidden>"
        return f"Response(resp={shown}, retcode={self.retcode})"
