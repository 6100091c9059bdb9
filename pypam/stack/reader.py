"""How libpam turns a pam.d file's bytes into lines and tokens (libpam 1.5.2).

A faithful copy of `_pam_assemble_line` (pam_handlers.c) over glibc `fgets` into a
1024-byte buffer, and of `_pam_StrTok`/`_pam_mkargv` (pam_misc.c), with their quirks:

- a physical line longer than 1023 bytes is read in pieces, and each piece is parsed
  as a line of its own;
- `#` starts a comment anywhere, even inside `[...]`;
- a line ending in `\\` continues on the next non-blank, non-comment line; a file that
  ends inside a continuation, or a continued line longer than the buffer, makes the
  whole file fail to load;
- a NUL byte ends the line's text (C strings), the rest of that physical line is lost;
- a continued line whose backslash is the buffer's last byte makes libpam loop forever
  (glibc's fgets with room for 1 byte reads nothing): reported as `ReadError(hang=True)`.

Text is handled as latin-1 so that every byte maps to one character and back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

BUF_SIZE = 1024                 # pam_handlers.c BUF_SIZE
BLANKS = " \n\t"                # the only characters libpam treats as blanks


@dataclass(frozen=True)
class LogicalLine:
    """One line as libpam's parser sees it: `text` without the comment; `number` is the
    physical line (1-based) where it starts."""

    number: int
    text: str


class ReadError(Exception):
    """libpam gives up on the file at this line (`hang`: it would never return)."""

    def __init__(self, number: int, message: str, hang: bool = False) -> None:
        super().__init__(message)
        self.number = number
        self.hang = hang


class _Fgets:
    """glibc fgets over bytes, tracking physical line numbers."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.line = 1

    def read(self, size: int) -> tuple[bytes | None, int]:
        """(chunk or None at EOF, physical line number where the chunk starts)."""
        start_line = self.line
        if size == 1:                           # glibc: room only for the NUL
            return b"", start_line
        if self.pos >= len(self.data):
            return None, start_line
        end = self.data.find(b"\n", self.pos, self.pos + size - 1)
        stop = end + 1 if end >= 0 else min(len(self.data), self.pos + size - 1)
        chunk = self.data[self.pos:stop]
        self.pos = stop
        if end >= 0:
            self.line += 1
        return chunk, start_line


def logical_lines(data: bytes) -> list[LogicalLine]:
    """All lines libpam parses from a file's bytes; raises ReadError where libpam
    stops (the lines before it are still used by libpam: see `ReadError`)."""
    return list(iter_logical_lines(data))


def iter_logical_lines(data: bytes):
    """Generator form of `logical_lines`: yields lines, raises ReadError at the point
    where libpam's `_pam_assemble_line` returns -1 (or would loop forever)."""
    reader = _Fgets(data)
    while True:
        buffer = ""          # the buffer's text before p
        used = 0
        first_line = 0
        while True:
            if len(buffer) >= BUF_SIZE:
                raise ReadError(reader.line, "continued line longer than libpam's "
                                f"{BUF_SIZE}-byte buffer: libpam rejects the file")
            room = BUF_SIZE - len(buffer)
            chunk, number = reader.read(room)
            if chunk is None:
                if used:
                    raise ReadError(reader.line, "file ends inside a continued line "
                                    "(trailing backslash): libpam rejects the file")
                return
            if room == 1:
                raise ReadError(number, "a continued line fills libpam's buffer up to its "
                                "last byte: libpam 1.5.2 loops forever reading it", hang=True)
            text = chunk.split(b"\0", 1)[0].decode("latin-1")
            stripped = text.lstrip(BLANKS)
            if not stripped or stripped[0] == "#":
                continue                          # nothing here; p does not move
            first_line = first_line or number
            hash_at = stripped.find("#")
            if hash_at >= 0:
                content = stripped[:hash_at]
                used += len(content)
                buffer += text[:len(text) - len(stripped) + hash_at]
                break
            body = stripped.rstrip(BLANKS)
            if body.endswith("\\"):
                kept = text[:len(text) - len(stripped) + len(body) - 1] + " "
                used += len(body)
                buffer += kept
                continue
            used += len(stripped)
            buffer += text
            break
        yield LogicalLine(first_line, buffer)


_BLANKS_RUN = re.compile(r"[ \n\t]*")
_WORD = re.compile(r"[^ \n\t]*")
_BRACKETED = re.compile(r"(?:\\\]|[^\]])*")     # up to the first unescaped ]


def strtok(text: str, pos: int | None) -> tuple[str | None, int | None]:
    r"""`_pam_StrTok(from, " \n\t", &next)`: the next token from `pos` and where the
    rest starts (None: nothing left). `[...]` is one token without its brackets, `\]`
    inside it stands for `]`; the first unescaped `]` ends it."""
    if pos is None:
        return None, None
    n = len(text)
    pos = _BLANKS_RUN.match(text, pos).end()
    if pos >= n:
        return None, None
    if text[pos] == "[":
        end = _BRACKETED.match(text, pos + 1).end()
        token = text[pos + 1:end].replace("\\]", "]")
    else:
        end = _WORD.match(text, pos).end()
        token = text[pos:end]
    if end < n:
        end += 1                      # the terminator is overwritten with NUL
    return token, (end if end < n else None)


def mkargv(text: str, pos: int | None) -> list[str]:
    """`_pam_mkargv`: the module arguments, tokenised like everything else."""
    args: list[str] = []
    if pos is None:
        return args
    while True:
        token, pos = strtok(text, pos)
        if token is None:
            return args
        args.append(token)
