"""`Record`: an immutable value with named fields, like a frozen dataclass.

Why not dataclasses: `import dataclasses` pulls in `inspect` and costs 5-10 ms, paid on
every PAM login by every process that checks a PIN. A subclass names its fields in
order (`_FIELDS`, also its `__slots__`) and the defaults of trailing ones (`_DEFAULTS`).
"""
from __future__ import annotations


class Record:
    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()
    # Read-only by convention; typing.ClassVar would cost an import on the login path.
    _DEFAULTS: dict[str, object] = {}  # noqa: RUF012

    def __init__(self, *args: object, **kwargs: object) -> None:
        if len(args) > len(self._FIELDS):
            raise TypeError(f"{type(self).__name__} takes {len(self._FIELDS)} fields")
        values = dict(self._DEFAULTS)
        values.update(zip(self._FIELDS, args))
        for name, value in kwargs.items():
            if name not in self._FIELDS or name in self._FIELDS[:len(args)]:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated field {name!r}")
            values[name] = value
        missing = [name for name in self._FIELDS if name not in values]
        if missing:
            raise TypeError(f"{type(self).__name__}: missing {', '.join(missing)}")
        for name in self._FIELDS:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def as_dict(self) -> dict[str, object]:
        """The fields by name, in order."""
        return {name: getattr(self, name) for name in self._FIELDS}

    def replace(self, **changes: object):
        """A copy with some fields changed."""
        return type(self)(**{**self.as_dict(), **changes})

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"{type(self).__name__}({fields})"
