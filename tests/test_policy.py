"""The policy file: every error case is a clear PolicyError, never silent defaults."""
from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from pinutil.errors import InvalidPin, PolicyError
from pinutil.pin.policy import DEFAULT_POLICY_PATH, Policy, load_policy, parse_policy
from tests.support.accounts import AS_NOBODY

NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.fixture
def open_dir(tmp_path):
    """A directory nobody can traverse (pytest's tmp_path lives under a 0700 dir)."""
    path = tempfile.mkdtemp(prefix="pinpol-", dir="/tmp")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def write(tmp_path, text: str | bytes, mode: int = 0o644, name: str = "policy") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.chmod(path, mode)
    return str(path)


def assert_policy_error(path: str, *needles: str) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert path in message
    for needle in needles:
        assert needle in message, message
    return message


# --- defaults and accepted syntax -------------------------------------------------

def test_defaults_are_the_documented_ones():
    p = Policy()
    assert (p.pin_min_length, p.pin_max_length, p.pin_lockout_max_attempts) == (4, 8, 5)
    assert p.pin_charset == "digits"
    assert p.pinutil_path == "/usr/bin/pinutil"
    assert p.tcti == "device:/dev/tpmrm0"
    assert p.nv_base == 0x01000000
    assert p.helper_timeout == 3
    assert p.pin_session == "salted" and p.salted
    assert p.master_key_file == "/var/pinpam/sealed_master_key"
    assert DEFAULT_POLICY_PATH == "/etc/pinpam/policy"


def test_the_master_key_auth_file_follows_the_state_dir(tmp_path):
    """Unset, `master_key_auth_file` is `master_key_auth` in `state_dir` (on the old
    code it stayed /var/lib/pinutild/master_key_auth whatever state_dir said); the
    default place is the one it always had, and a value set is kept."""
    assert Policy().master_key_auth_file == "/var/lib/pinutild/master_key_auth"
    moved = load_policy(write(tmp_path, "state_dir = /srv/pinutild/\n"))
    assert moved.master_key_auth_file == "/srv/pinutild/master_key_auth"
    assert Policy(state_dir="/srv/x").master_key_auth_file == "/srv/x/master_key_auth"
    named = load_policy(write(tmp_path, "state_dir = /srv/pinutild\n"
                                        "master_key_auth_file = /etc/pinpam/mk_auth\n"))
    assert named.master_key_auth_file == "/etc/pinpam/mk_auth"


def test_missing_file_gives_defaults(tmp_path):
    assert load_policy(str(tmp_path / "absent")) == Policy()
    assert load_policy(str(tmp_path / "no-dir" / "policy")) == Policy()


def test_empty_and_comment_only_files_give_defaults(tmp_path):
    assert load_policy(write(tmp_path, "")) == Policy()
    assert load_policy(write(tmp_path, "# nothing\n\n   \n\t# indented\n")) == Policy()


def test_pinpam_style_file(tmp_path):
    text = ("pin_min_length=6\npin_max_length=10\npin_lockout_max_attempts=3\n"
            "pinutil_path=/usr/local/bin/pinutil\ntcti=device:/dev/tpm0\n")
    p = load_policy(write(tmp_path, text))
    assert (p.pin_min_length, p.pin_max_length, p.pin_lockout_max_attempts) == (6, 10, 3)
    assert p.pinutil_path == "/usr/local/bin/pinutil"
    assert p.tcti == "device:/dev/tpm0"
    assert p.pin_charset == "digits"  # untouched keys keep their defaults


def test_all_keys_spaces_quotes_and_comments(tmp_path):
    text = """\
# The packaged policy (pinpam ignored files like this one: issue #18)
pin_min_length = 5          # trailing comment
  pin_max_length   =   12
pin_lockout_max_attempts = '7'
pin_charset = "alnum"   # quoted, then a comment
pinutil_path = "/opt/pin util/pinutil"
tcti = 'swtpm:path=/tmp/s #1'
nv_base = 0x01000100
helper_timeout = 2.5
pin_session = plain
master_key_file = /var/lib/pinpam/key#not-a-comment\r
"""
    p = load_policy(write(tmp_path, text))
    assert p == Policy(pin_min_length=5, pin_max_length=12, pin_lockout_max_attempts=7,
                       pin_charset="alnum", pinutil_path="/opt/pin util/pinutil",
                       tcti="swtpm:path=/tmp/s #1", nv_base=0x01000100,
                       helper_timeout=2.5, pin_session="plain",
                       master_key_file="/var/lib/pinpam/key#not-a-comment")
    assert not p.salted


def test_decimal_nv_base_and_integer_timeout(tmp_path):
    p = load_policy(write(tmp_path, "nv_base = 16777472\nhelper_timeout = 3\n"))
    assert p.nv_base == 0x01000100 and p.helper_timeout == 3


# --- file-level errors ------------------------------------------------------------

def test_symlink_is_refused_even_to_a_good_file(tmp_path):
    target = write(tmp_path, "pin_min_length = 6\n", name="real")
    link = tmp_path / "policy"
    link.symlink_to(target)
    assert_policy_error(str(link), "symbolic link")


def test_dangling_symlink_is_an_error_not_defaults(tmp_path):
    link = tmp_path / "policy"
    link.symlink_to(tmp_path / "absent")
    assert_policy_error(str(link), "symbolic link")


def test_fifo_is_refused_without_hanging(tmp_path):
    path = str(tmp_path / "policy")
    os.mkfifo(path, 0o644)
    # In a child process with a timeout: a blocking open() on a FIFO with no writer
    # would hang forever, and that must fail the test, not hang the suite.
    code = ("import sys; from pinutil.pin.policy import load_policy\n"
            "from pinutil.errors import PolicyError\n"
            "try:\n    load_policy(sys.argv[1])\n"
            "except PolicyError as e:\n    print(e); sys.exit(3)\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, path], check=False, capture_output=True,
                            text=True, timeout=20,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 3, result.stderr
    assert "not a regular file" in result.stdout and path in result.stdout
    assert time.monotonic() - started < 10


def test_directory_is_refused(tmp_path):
    path = tmp_path / "policy"
    path.mkdir()
    assert_policy_error(str(path), "not a regular file")


def test_device_is_refused():
    assert_policy_error("/dev/null", "not a regular file")


def test_file_owned_by_another_user_is_refused(tmp_path):
    assert os.geteuid() == 0, "the suite runs as root (see ARCHITECTURE.md)"
    path = write(tmp_path, "pin_min_length = 6\n")
    os.chown(path, NOBODY, -1)
    assert_policy_error(path, f"owned by uid {NOBODY}")


def test_file_owned_by_the_effective_uid_is_accepted(open_dir):
    # As nobody, a file owned by nobody is accepted and one owned by root too.
    # Run in a child that drops to nobody.
    tmp_path = open_dir
    own = write(tmp_path, "pin_min_length = 6\n", name="own")
    os.chown(own, NOBODY, -1)
    root_owned = write(tmp_path, "pin_min_length = 7\n", name="root")
    code = ("import sys; sys.path.insert(0, sys.argv[3]); "
            "from pinutil.pin.policy import load_policy; "
            "print(load_policy(sys.argv[1]).pin_min_length, "
            "load_policy(sys.argv[2]).pin_min_length)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [*AS_NOBODY, sys.executable, "-I", "-c", code, own, root_owned, root],
        check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["6", "7"]


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o622])
def test_group_or_world_writable_is_refused(tmp_path, mode):
    path = write(tmp_path, "pin_min_length = 6\n", mode=mode)
    assert_policy_error(path, "writable by group or others", f"{mode:04o}")


def test_read_only_modes_are_accepted(tmp_path):
    for mode in (0o644, 0o600, 0o444, 0o400):
        assert load_policy(write(tmp_path, "pin_min_length = 6\n", mode=mode)).pin_min_length == 6


def test_oversized_file_is_refused(tmp_path):
    text = "# padding\n" * 7000 + "pin_min_length = 6\n"
    assert len(text) > 64 * 1024
    assert_policy_error(write(tmp_path, text), "larger than 65536 bytes")


def test_file_of_exactly_the_limit_is_accepted(tmp_path):
    text = "#" * (64 * 1024 - 1) + "\n"
    assert load_policy(write(tmp_path, text)) == Policy()


def test_unreadable_file_is_an_error(open_dir):
    # As nobody, a root-owned 0600 file cannot be opened: an error, not defaults.
    path = write(open_dir, "pin_min_length = 6\n", mode=0o600)
    code = ("import sys; sys.path.insert(0, sys.argv[2]);"
            "from pinutil.pin.policy import load_policy\n"
            "from pinutil.errors import PolicyError\n"
            "try:\n    load_policy(sys.argv[1])\n"
            "except PolicyError as e:\n    print(e); sys.exit(3)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [*AS_NOBODY, sys.executable, "-I", "-c", code, path, root],
        check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result.stderr
    assert "cannot open" in result.stdout and path in result.stdout


def test_path_through_a_regular_file_is_an_error(tmp_path):
    path = write(tmp_path, "x", name="file")
    assert_policy_error(path + "/policy", "cannot open")


# --- content errors -----------------------------------------------------------------

def test_non_utf8_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, b"pin_min_length = 6\ntcti = device:/dev/tpm\xff0\n")
    assert_policy_error(path, "line 2", "not valid UTF-8")


def test_binary_garbage_is_refused(tmp_path):
    path = write(tmp_path, bytes(range(256)) * 4)
    assert_policy_error(path)


def test_nul_and_control_characters_are_refused(tmp_path):
    assert_policy_error(write(tmp_path, "pin_min_length = 6\x00\n"), "line 1", "control")
    assert_policy_error(write(tmp_path, "\n\x1b[2Jpin_min_length = 6\n"), "line 2",
                        "control")


@pytest.mark.parametrize("line, reason", [
    ("garbage", "expected 'key = value'"),
    ("= 5", "expected 'key = value'"),
    ("pin min length = 5", "expected 'key = value'"),
    ("pin_min_length", "expected 'key = value'"),
    ("pin_min_length =", "missing value"),
    ("pin_min_length =    # nothing", "missing value"),
    ("pin_min_length : 5", "expected 'key = value'"),
    ("[section]", "expected 'key = value'"),
    ("PIN_MIN_LENGTH = 5", "unknown key 'PIN_MIN_LENGTH'"),
    ("pin_minimum_length = 5", "unknown key 'pin_minimum_length'"),
    ("pin_min_length = '5", "missing closing '"),
    ("pin_min_length = \"5'", "missing closing \""),
    ("pin_min_length = 5\"", "unbalanced quotes"),
    ("pin_min_length = '5' 6", "text after the closing quote"),
    ("pin_min_length = 5 6", "not an integer"),
    ("pin_min_length = five", "not an integer"),
    ("pin_min_length = -4", "not an integer"),
    ("pin_min_length = +4", "not an integer"),
    ("pin_min_length = 4_0", "not an integer"),
    ("pin_min_length = 0", "between 1 and 32"),
    ("pin_max_length = 33", "between 1 and 32"),
    ("pin_max_length = 99999999999", "not an integer"),
    ("pin_lockout_max_attempts = 0", "between 1 and 100"),
    ("pin_lockout_max_attempts = 101", "between 1 and 100"),
    ("pin_lockout_max_attempts = 4294967295", "between 1 and 100"),
    ("pin_charset = hex", "one of digits, alnum, any"),
    ("pin_charset = DIGITS", "one of digits, alnum, any"),
    ("pinutil_path = pinutil", "absolute path"),
    ("pinutil_path = ./bin/pinutil", "absolute path"),
    ("master_key_file = var/key", "absolute path"),
    ("tcti = /tmp/evil.so:conf", "NAME or NAME:CONFIG"),
    ("tcti = ../x:y", "NAME or NAME:CONFIG"),
    ("tcti = ''", "NAME or NAME:CONFIG"),
    ("nv_base = 0x00FFFFFF", "owner NV range"),
    ("nv_base = 0x01400000", "owner NV range"),
    ("nv_base = 0x81000000", "owner NV range"),
    ("nv_base = 0xZZ", "not an integer"),
    ("helper_timeout = 0", "more than 0"),
    ("helper_timeout = 301", "at most 300"),
    ("helper_timeout = -1", "not a number"),
    ("helper_timeout = 1e3", "not a number"),
    ("helper_timeout = nan", "not a number"),
    ("pin_session = hmac", "one of salted, plain"),
])
def test_bad_lines_name_file_line_and_reason(tmp_path, line, reason):
    path = write(tmp_path, f"# header\n\n{line}\n")
    assert_policy_error(path, "line 3", reason)


def test_duplicate_key_is_refused(tmp_path):
    path = write(tmp_path, "pin_min_length = 4\npin_max_length = 8\npin_min_length=4\n")
    assert_policy_error(path, "line 3", "duplicate key 'pin_min_length'", "line 1")


def test_min_greater_than_max_is_refused(tmp_path):
    assert_policy_error(write(tmp_path, "pin_max_length = 6\npin_min_length = 7\n"),
                        "line 2", "pin_min_length (7) is greater than pin_max_length (6)")
    # Against a default, too: min 9 > default max 8.
    assert_policy_error(write(tmp_path, "pin_min_length = 9\n"), "greater than")


def test_error_never_falls_back_to_defaults(tmp_path):
    # A valid line before a bad one must not give a half-read policy either.
    path = write(tmp_path, "pin_min_length = 6\nbogus = 1\n")
    assert_policy_error(path, "unknown key")


def test_parse_policy_names_given_path():
    with pytest.raises(PolicyError, match=r"^/x/y, line 1: unknown key"):
        parse_policy("nope = 1\n", "/x/y")


# --- check_pin -------------------------------------------------------------------

@pytest.mark.parametrize("pin", ["1234", "0000", "12345678", "00001234"])
def test_valid_digit_pins(pin):
    assert Policy().check_pin(pin) == pin.encode()


@pytest.mark.parametrize("pin, reason", [
    ("", "empty"),
    ("123", "at least 4"),
    ("123456789", "at most 8"),
    ("12a4", "only the digits 0-9"),
    ("abcd", "only the digits 0-9"),
    ("\u0663\u0663\u0663\u0663", "only the digits 0-9"),       # ARABIC-INDIC THREE
    ("\uff11\uff12\uff13\uff14", "only the digits 0-9"),       # fullwidth digits
    ("12 34", "only the digits 0-9"),
    (" 1234", "only the digits 0-9"),
    ("1234\n", "only the digits 0-9"),
    ("1234\r", "only the digits 0-9"),
    ("12\x0034", "only the digits 0-9"),
    ("12\t34", "only the digits 0-9"),
    ("1234\udcff", "only the digits 0-9"),                     # surrogateescape residue
    ("%s%n", "only the digits 0-9"),
    ("1" * 4096, "at most 8"),
    ("1" * (1 << 20), "at most 8"),
])
def test_invalid_pins_are_refused_without_echo(pin, reason):
    with pytest.raises(InvalidPin) as info:
        Policy().check_pin(pin)
    message = str(info.value)
    assert reason in message
    if len(pin.strip()) >= 2:
        assert pin.strip() not in message


def test_check_pin_refuses_bytes():
    with pytest.raises(InvalidPin):
        Policy().check_pin(b"1234")  # type: ignore[arg-type]


def test_alnum_charset():
    p = Policy(pin_charset="alnum")
    assert p.check_pin("ab12CD") == b"ab12CD"
    for bad in ("ab-12", "ab 12", "\u00e9abc", "abc\u0663"):
        with pytest.raises(InvalidPin, match="letters"):
            p.check_pin(bad)


def test_any_charset_is_printable_ascii_without_whitespace():
    p = Policy(pin_charset="any", pin_max_length=32)
    assert p.check_pin("a!~#%s{}") == b"a!~#%s{}"
    for bad in ("ab cd", "abcd\n", "ab\tcd", "abc\x7f", "ab\x00cd", "\u00e9abcd",
                "abc\u2003d"):
        with pytest.raises(InvalidPin, match="printable ASCII"):
            p.check_pin(bad)


def test_length_is_counted_in_characters_within_policy():
    p = Policy(pin_min_length=6, pin_max_length=6)
    assert p.check_pin("123456") == b"123456"
    with pytest.raises(InvalidPin):
        p.check_pin("12345")
    with pytest.raises(InvalidPin):
        p.check_pin("1234567")


def test_a_policy_read_again_is_parsed_again_only_when_its_bytes_changed(tmp_path):
    """pinutild re-reads its policy for every request and parses it only when the bytes
    differ from the last parse: an edit of the same size within one timestamp tick
    still takes effect (the cache is keyed on the content, not on the file's times)."""
    path = tmp_path / "policy"
    path.write_text("pin_min_length = 4\n")
    first = load_policy(str(path))
    assert load_policy(str(path)) is first  # same bytes: the same immutable Policy
    path.write_text("pin_min_length = 5\n")
    assert load_policy(str(path)).pin_min_length == 5
    path.write_text("pin_min_length = 9\n")
    with pytest.raises(PolicyError):  # an edit that breaks the file is never hidden
        load_policy(str(path))
    path.unlink()
    assert load_policy(str(path)) == Policy()


def test_a_policy_reached_through_a_users_directory_or_symlink_is_refused(tmp_path):
    """Review 3, R4: `policy=` names a path below a directory a user controls; the user
    points it (a symlink of theirs) at another root-owned file called `policy` with a
    weaker lockout and the PIN in clear. Fails on the code that walked nothing."""
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chmod(tmp_path, 0o755)
    real = tmp_path / "root-owned"
    real.mkdir(mode=0o755)
    (real / "policy").write_text("pin_lockout_max_attempts = 100\npin_session = plain\n")
    os.chmod(real / "policy", 0o644)
    users = tmp_path / "users"
    users.mkdir(mode=0o755)
    os.chown(users, nobody, -1)
    (users / "pinpam").symlink_to(real)
    with pytest.raises(PolicyError, match="symbolic link|owned by uid"):
        load_policy(str(users / "pinpam" / "policy"))
    assert load_policy(str(real / "policy")).pin_session == "plain"
