"""The PIN policy: `/etc/pinpam/policy`, read strictly.

File format (a superset of pinpam's, so its files keep working):

    # comment
    pin_min_length = 4
    pin_max_length=8                 # trailing comment after whitespace
    tcti = "swtpm:path=/run/tpm.sock"

- one `key = value` (or `key=value`) per line; blank lines and `#` comments (whole
  line, or after whitespace following the value) are ignored;
- a value may be wrapped in single or double quotes (no escapes; a quoted value may
  contain `#` and spaces); an unquoted `#` that is not preceded by whitespace is part
  of the value;
- each key at most once; an unknown key, a bad value, a syntax error, a file that is
  not UTF-8, is larger than 64 KiB, is not a regular file (symlinks are not followed,
  FIFOs never block), is not owned by root or the effective uid, or is group/world
  writable is a `PolicyError` naming the file, the line and the reason.
- a missing file (ENOENT) means the documented defaults; any other failure is an
  error, never silent defaults (pinpam's issue #18).

Keys, defaults and limits:

    pin_min_length            4       1 .. 32
    pin_max_length            8       1 .. 32, >= pin_min_length
    pin_lockout_max_attempts  5       1 .. 100 (pinpam's default was 3)
    pin_charset               digits  digits | alnum | any
    pinutil_path              /usr/bin/pinutil          absolute
    tcti                      device:/dev/tpmrm0        NAME or NAME:CONF
    nv_base                   0x01000000                owner NV range
    helper_timeout            3       seconds, 0 < t <= 300, decimals allowed: the TPM
                                      time one whole login may spend (all modules)
    pin_session               salted  salted | plain
    master_key_file           /var/pinpam/sealed_master_key   absolute
    state_dir                 /var/lib/pinutild               absolute (the service's state:
                                      enrolment records, salt key record; pin/state.py)
    service_socket            /run/pinutild.sock              absolute (pinutild; `auto`
                                      uses the service whenever this socket exists)
    master_key_auth_file      STATE_DIR/master_key_auth   absolute (the master key's
                                      authValue: master_key/auth_record.py; by
                                      default the file master_key_auth in state_dir)
    owner_auth_file           /etc/pinpam/owner-auth          absolute (the TPM owner
                                      password `pinutil owner protect` writes; absent:
                                      the owner hierarchy's factory empty password)
    require_owner_protection  no      yes | no: `yes` makes every setup refuse while the
                                      TPM's owner hierarchy has no password (enrolment
                                      only, not logins: pin/lifecycle.py says why)

Why these limits:
- A PIN is the authValue of an NV index whose nameAlg is SHA-256, and the TPM caps an
  authValue at the digest size: 32 bytes. Every charset is ASCII, so a PIN's length
  in characters equals its length in bytes and 32 is the real maximum.
- `pin_charset`: `digits` is ASCII 0-9 only (no Unicode digits such as U+0663);
  `alnum` is ASCII letters and digits; `any` is printable ASCII without whitespace
  (0x21-0x7E). Non-ASCII is refused in every mode: the same PIN typed through another
  keyboard layout or Unicode normalisation would give different bytes, and the byte
  length would no longer be what the policy says.
- `pin_lockout_max_attempts` becomes the PIN_FAIL index's pinLimit. 0 would make the
  index unusable; above 100 a 4-digit PIN loses the protection the counter gives (100
  guesses already find 1% of 4-digit PINs).
- `nv_base` must lie in the TPM owner NV range 0x01000000-0x013FFFFF (the per-user
  handle `nv_base + uid` is range-checked again by `PinIndex.handle_for`).
- `tcti`'s NAME is restricted to `[A-Za-z0-9_-]+`: tctildr would also load a library
  given by path.
- `helper_timeout` (3 s) bounds all TPM work of one login together (the PIN status
  read, the check and master_key's token; typing time not counted): a PIN login
  sends about six TPM commands, tens of ms each on a TPM chip, plus a Python start
  (~60 ms) through the helper, so 3 s leaves a slow TPM a wide margin while a hung
  one costs a login 3 s once (10 s per call, 20 s per login, before).
"""
from __future__ import annotations

import os

from pinutil import securefile
from pinutil.errors import InvalidPin, PolicyError
from pinutil.record import Record
from pinutil.tpm import OWNER_NV_FIRST, OWNER_NV_LAST

DEFAULT_POLICY_PATH = "/etc/pinpam/policy"
#: The master key's authorisation record in `state_dir`, unless `master_key_auth_file`
#: names another place (with the default state_dir: /var/lib/pinutild/master_key_auth,
#: where it always was).
MASTER_KEY_AUTH_NAME = "master_key_auth"

MAX_POLICY_BYTES = 64 * 1024
# The TPM's limit, used by pin/index.py too: a PIN index's authValue is at most the
# digest size of its nameAlg (SHA-256).
MAX_PIN_LENGTH = 32
MAX_LOCKOUT_ATTEMPTS = 100
MAX_HELPER_TIMEOUT = 300.0

CHARSETS = ("digits", "alnum", "any")
PIN_SESSIONS = ("salted", "plain")

_DIGITS = frozenset("0123456789")
_ALNUM = _DIGITS | frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_PRINTABLE = frozenset(chr(c) for c in range(0x21, 0x7F))
_CHARSET_CHARS = {"digits": _DIGITS, "alnum": _ALNUM, "any": _PRINTABLE}
_CHARSET_TEXT = {
    "digits": "only the digits 0-9",
    "alnum": "only the letters A-Z, a-z and the digits 0-9",
    "any": "only printable ASCII characters without spaces",
}


class Policy(Record):
    """The PIN policy. Build one with `load_policy`; the defaults are the documented
    ones (used when no policy file exists)."""

    __slots__ = _FIELDS = (
        "pin_min_length", "pin_max_length", "pin_lockout_max_attempts", "pin_charset",
        "pinutil_path", "tcti", "nv_base", "helper_timeout", "pin_session", "master_key_file",
        "state_dir", "service_socket", "master_key_auth_file", "owner_auth_file",
        "require_owner_protection",
    )
    _DEFAULTS = {  # noqa: RUF012 - read-only (see pinutil.record)
        "pin_min_length": 4,
        "pin_max_length": 8,
        "pin_lockout_max_attempts": 5,
        "pin_charset": "digits",
        "pinutil_path": "/usr/bin/pinutil",
        "tcti": "device:/dev/tpmrm0",
        "nv_base": OWNER_NV_FIRST,
        "helper_timeout": 3,
        "pin_session": "salted",
        "master_key_file": "/var/pinpam/sealed_master_key",
        "state_dir": "/var/lib/pinutild",
        "service_socket": "/run/pinutild.sock",
        "master_key_auth_file": None,  # in state_dir: see __init__
        "owner_auth_file": "/etc/pinpam/owner-auth",
        "require_owner_protection": False,
    }
    pin_min_length: int
    pin_max_length: int
    pin_lockout_max_attempts: int
    pin_charset: str
    pinutil_path: str
    tcti: str
    nv_base: int
    helper_timeout: float
    pin_session: str
    master_key_file: str
    state_dir: str
    service_socket: str
    master_key_auth_file: str
    owner_auth_file: str
    require_owner_protection: bool

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if self.master_key_auth_file is None:  # not set: with the rest of the state
            object.__setattr__(self, "master_key_auth_file",
                               self.state_dir.rstrip("/") + "/" + MASTER_KEY_AUTH_NAME)

    # Where the state lives is decided here, from `state_dir` alone (pin/state.py says
    # what each file is and who may own it): every reader and writer asks the policy.
    @property
    def enrolment_dir(self) -> str:
        """The enrolment records' directory (pin/enrolment.py)."""
        return self.state_dir.rstrip("/") + "/enrolments"

    @property
    def salt_key_record(self) -> str:
        """The salt key record (pin/salt_key.py)."""
        return self.state_dir.rstrip("/") + "/salt_key"

    @property
    def salted(self) -> bool:
        """True when PIN checks must use a salted, parameter-encrypted session."""
        return self.pin_session == "salted"

    def check_pin(self, pin: str) -> bytes:
        """Return the PIN's bytes (what the TPM gets as authValue) if it obeys the
        policy, else raise `InvalidPin` with a message that never contains the PIN.

        Called before any TPM command, so a malformed PIN never spends an attempt."""
        if not isinstance(pin, str):
            raise InvalidPin("PIN must be text")
        if not pin:
            raise InvalidPin("PIN is empty")
        allowed = _CHARSET_CHARS[self.pin_charset]
        # set() keeps this linear even for a megabyte of input.
        if not set(pin) <= allowed:
            raise InvalidPin(f"PIN may contain {_CHARSET_TEXT[self.pin_charset]}")
        if len(pin) < self.pin_min_length:
            raise InvalidPin(f"PIN must have at least {self.pin_min_length} characters")
        if len(pin) > self.pin_max_length:
            raise InvalidPin(f"PIN must have at most {self.pin_max_length} characters")
        return pin.encode("ascii")


# --- value parsers: each returns the typed value or raises ValueError(reason) -------

# Plain string checks instead of `re`: its import costs ~2.5 ms on every PIN login.
_HEX = frozenset("0123456789abcdefABCDEF")
_TCTI_NAME = _ALNUM | frozenset("_-")
_KEY_CHARS = _ALNUM | frozenset("_")


def _digits(text: str, most: int) -> bool:
    """1..most ASCII digits."""
    return 0 < len(text) <= most and set(text) <= _DIGITS


def _is_int_text(text: str) -> bool:  # 0x1234abcd or 1234567890
    if text[:2] in ("0x", "0X"):
        return 0 < len(text) - 2 <= 8 and set(text[2:]) <= _HEX
    return _digits(text, 10)


def _is_number_text(text: str) -> bool:  # 123456 or 123456.123456
    whole, dot, fraction = text.partition(".")
    return _digits(whole, 6) and (not dot or _digits(fraction, 6))


def _is_tcti_text(text: str) -> bool:  # NAME or NAME:CONF, CONF without control chars
    name, _, conf = text.partition(":")
    return bool(name) and set(name) <= _TCTI_NAME and \
        not any(ord(c) < 0x20 or ord(c) == 0x7F for c in conf)


def _int(text: str) -> int:
    if not _is_int_text(text):
        raise ValueError("not an integer (decimal or 0x hexadecimal)")
    return int(text, 0) if text[:2].lower() == "0x" else int(text, 10)


def _int_between(low: int, high: int):
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value
    return parse


def _choice(choices: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return text
    return parse


def _absolute_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError("must be an absolute path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError("contains control characters")
    return text


def _tcti(text: str) -> str:
    if not _is_tcti_text(text):
        raise ValueError("must be NAME or NAME:CONFIG with NAME made of letters, "
                         "digits, '_' and '-'")
    return text


def _nv_base(text: str) -> int:
    value = _int(text)
    if not OWNER_NV_FIRST <= value <= OWNER_NV_LAST:
        raise ValueError(f"must lie in the owner NV range "
                         f"{OWNER_NV_FIRST:#010x}-{OWNER_NV_LAST:#010x}")
    return value


def _yes_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise ValueError("must be yes or no")
    return text == "yes"


def _timeout(text: str) -> float:
    if not _is_number_text(text):
        raise ValueError("not a number of seconds")
    value = float(text)
    if not 0 < value <= MAX_HELPER_TIMEOUT:
        raise ValueError(f"must be more than 0 and at most {MAX_HELPER_TIMEOUT:g}")
    return value


_PARSERS = {
    "pin_min_length": _int_between(1, MAX_PIN_LENGTH),
    "pin_max_length": _int_between(1, MAX_PIN_LENGTH),
    "pin_lockout_max_attempts": _int_between(1, MAX_LOCKOUT_ATTEMPTS),
    "pin_charset": _choice(CHARSETS),
    "pinutil_path": _absolute_path,
    "tcti": _tcti,
    "nv_base": _nv_base,
    "helper_timeout": _timeout,
    "pin_session": _choice(PIN_SESSIONS),
    "master_key_file": _absolute_path,
    "state_dir": _absolute_path,
    "service_socket": _absolute_path,
    "master_key_auth_file": _absolute_path,
    "owner_auth_file": _absolute_path,
    "require_owner_protection": _yes_no,
}
assert set(_PARSERS) == set(Policy._FIELDS)



def _split_line(stripped: str) -> tuple[str, str] | None:
    """`key = value` -> (key, raw value), or None if the line has no such shape."""
    key, sep, raw = stripped.partition("=")
    key = key.rstrip(" \t")
    if not sep or not key or not set(key) <= _KEY_CHARS or key[0] in _DIGITS:
        return None
    return key, raw.lstrip(" \t")


def _without_trailing_comment(raw: str) -> str:
    """Drop a `#` comment that follows whitespace (an unquoted `a#b` keeps its `#`)."""
    cut = [i for i in (raw.find(" #"), raw.find("\t#")) if i >= 0]
    return raw[:min(cut)] if cut else raw


def _split_value(raw: str) -> str:
    """The value of a line (after `=`), without quotes and trailing comment."""
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = raw.find(quote, 1)
        if end < 0:
            raise ValueError(f"missing closing {quote}")
        rest = raw[end + 1:].strip(" \t")
        if rest and not rest.startswith("#"):
            raise ValueError("text after the closing quote")
        return raw[1:end]
    # `key = # text` has no value: after the `=` the whitespace was consumed.
    value = "" if raw.startswith("#") else _without_trailing_comment(raw).rstrip(" \t")
    if not value:
        raise ValueError("missing value")
    if value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
        raise ValueError("unbalanced quotes")
    return value


def parse_policy(text: str, path: str = "<policy>") -> Policy:
    """Parse policy text (already decoded) strictly; errors name `path` and the line."""
    values: dict[str, object] = {}
    lines_of: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        where = f"{path}, line {number}"
        line = line.removesuffix("\r")
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in line):
            raise PolicyError(f"{where}: control character in the line")
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        parts = _split_line(stripped)
        if parts is None:
            raise PolicyError(f"{where}: expected 'key = value'")
        key, raw = parts
        if key not in _PARSERS:
            raise PolicyError(f"{where}: unknown key {key!r}")
        if key in values:
            raise PolicyError(f"{where}: duplicate key {key!r} "
                              f"(first set on line {lines_of[key]})")
        try:
            values[key] = _PARSERS[key](_split_value(raw))
        except ValueError as e:
            raise PolicyError(f"{where}: bad value for {key}: {e}") from None
        lines_of[key] = number
    policy = Policy(**values)  # type: ignore[arg-type]
    if policy.pin_min_length > policy.pin_max_length:
        line = lines_of.get("pin_min_length", lines_of.get("pin_max_length"))
        where = f"{path}, line {line}" if line else path
        raise PolicyError(f"{where}: pin_min_length ({policy.pin_min_length}) is "
                          f"greater than pin_max_length ({policy.pin_max_length})")
    return policy


def _read_policy_bytes(path: str) -> bytes | None:
    """The file's bytes after the safety checks, or None if it does not exist. Owned by
    root or by the effective uid (a user's own test policy), writable by no one else."""
    try:
        return securefile.read_file(path, owners=(0, os.geteuid()),
                                    forbidden=securefile.GROUP_OR_OTHERS_WRITE,
                                    max_bytes=MAX_POLICY_BYTES)
    except securefile.Refused as e:
        raise PolicyError(f"{path}: {e}") from None


def load_policy(path: str = DEFAULT_POLICY_PATH) -> Policy:
    """Read and validate the policy file at `path`.

    A missing file gives the documented defaults; every other problem raises
    `PolicyError` (never silent defaults)."""
    data = _read_policy_bytes(path)
    if data is None:
        return Policy()
    if _last_parsed[:2] == [path, data]:  # read (and checked) again, parsed once
        return _last_parsed[2]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PolicyError(f"{path}, line {line}: not valid UTF-8") from None
    policy = parse_policy(text, path)
    _last_parsed[:] = [path, data, policy]
    return policy


#: [path, bytes, Policy] of the last file parsed: pinutild's worker reads its policy for
#: every request (an edit takes effect at once) and a login is two requests; the same
#: bytes give the same (immutable) Policy, so only a changed file is parsed again.
_last_parsed: list = []
