"""The one exception a module raises to return a specific PAM code."""
from .constants import RESULT_LIMIT


class PamError(Exception):
    """Raise `PamError(code)` from a hook to make it return `code`.

    `code` must be a non-success PAM result: success is only ever an explicit
    `return PAM_SUCCESS`, never an exception (fail closed).
    """

    def __init__(self, code: int, message: str | None = None) -> None:
        if not isinstance(code, int) or isinstance(code, bool):
            raise TypeError("PamError code must be an int")
        if not 0 < int(code) < RESULT_LIMIT:
            raise ValueError(f"PamError code {code!r} is not a PAM failure code")
        super().__init__(message or f"PAM error {int(code)}")
        self.code = int(code)
        self.message = message
