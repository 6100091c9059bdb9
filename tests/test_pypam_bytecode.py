"""The loader's bytecode: a vetted checked-hash pyc beside a module is used; any other
pyc is ignored and the source is compiled, through the real shim and libpam.

To tell which one ran, the pyc holds *different* code from the source (it writes
marker "pyc", the source writes marker "source") under a header that carries the
hash of the source on disk. That is exactly what the loader must trust and no more:
the pyc's code is believed only when the pyc itself is as trusted as the source.
"""
import base64
import importlib.util
import marshal
import os
import sys

import pytest

from tests.support.pamhost import PAM_SUCCESS, run_pam
from tests.support.pypam_stacks import pypam_service, stage_rcs
from tests.test_pypam_errors import NOBODY, trusted_tmp  # noqa: F401 - fixture

SERVICE = "pypam-bytecode"
CHECKED_HASH, UNCHECKED_HASH, TIMESTAMP = 0b11, 0b01, 0b00


def _module_text(markers: str, which: str) -> str:
    return (f"open({os.path.join(markers, which)!r}, 'w').close()\n"
            "def authenticate(pamh, flags, args):\n    return 0\n")


def _write_pyc(directory: str, source: bytes, code_text: str, *, flags=CHECKED_HASH,
               hash_of: bytes | None = None, magic: bytes = importlib.util.MAGIC_NUMBER,
               body: bytes | None = None, mode: int = 0o644, uid: int = 0,
               cache_mode: int = 0o755) -> str:
    cache = os.path.join(directory, "__pycache__")
    os.makedirs(cache, exist_ok=True)
    os.chmod(cache, cache_mode)
    if flags & 0b01:
        stamp = importlib.util.source_hash(source if hash_of is None else hash_of)
    else:
        stamp = (0).to_bytes(4, "little") + len(source).to_bytes(4, "little")
    if body is None:
        body = marshal.dumps(compile(code_text, "compiled-elsewhere.py", "exec"))
    path = os.path.join(cache, f"evil.{sys.implementation.cache_tag}.pyc")
    with open(path, "wb") as f:
        f.write(magic + flags.to_bytes(4, "little") + stamp + body)
    os.chown(path, uid, 0)
    os.chmod(path, mode)
    return path


def _which_ran(tmp, pam_confdir) -> list[str]:
    pam_confdir.write(SERVICE, pypam_service("evil", moduledir=tmp.path))
    assert stage_rcs(run_pam(pam_confdir, SERVICE)) == [PAM_SUCCESS]
    return sorted(os.listdir(tmp.markers))


@pytest.fixture
def module(trusted_tmp):  # noqa: F811 - the imported fixture
    """evil.py (source text writes marker "source"); returns (tmp, source bytes)."""
    text = _module_text(trusted_tmp.markers, "source")
    trusted_tmp.module("evil", body=text)
    return trusted_tmp, text.encode()


def test_without_a_pyc_the_source_runs(module, pam_confdir):
    tmp, _ = module
    assert _which_ran(tmp, pam_confdir) == ["source"]


def test_a_vetted_checked_hash_pyc_is_used(module, pam_confdir):
    tmp, source = module
    _write_pyc(tmp.path, source, _module_text(tmp.markers, "pyc"))
    assert _which_ran(tmp, pam_confdir) == ["pyc"]


def test_the_pyc_compileall_writes_is_used(trusted_tmp, pam_confdir):  # noqa: F811
    """What `make build` and `make install` do: compileall --invalidation-mode
    checked-hash. The module names its marker after the file its code was compiled
    as: compileall was told (ddir) to record /compiled-by-make."""
    import compileall
    import py_compile

    trusted_tmp.module("evil", body=(
        "import sys\n"
        "came_from = sys._getframe().f_code.co_filename\n"
        f"which = 'pyc' if came_from.startswith('/compiled-by-make/') else 'source'\n"
        f"open({trusted_tmp.markers!r} + '/' + which, 'w').close()\n"
        "def authenticate(pamh, flags, args):\n    return 0\n"))
    assert _which_ran(trusted_tmp, pam_confdir) == ["source"]
    os.remove(os.path.join(trusted_tmp.markers, "source"))
    assert compileall.compile_dir(trusted_tmp.path, quiet=1, ddir="/compiled-by-make",
                                  invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    assert _which_ran(trusted_tmp, pam_confdir) == ["pyc"]


@pytest.mark.parametrize("case", [
    "stale hash", "timestamp pyc", "unchecked hash pyc", "wrong magic", "corrupt body",
    "not a code object", "pyc owned by nobody", "group-writable pyc",
    "world-writable __pycache__", "__pycache__ owned by nobody", "pyc is a symlink",
    "__pycache__ is a symlink", "body marshal fails on with SystemError",
])
def test_any_other_pyc_is_ignored_and_the_source_runs(module, pam_confdir, case):
    tmp, source = module
    pyc_code = _module_text(tmp.markers, "pyc")
    kwargs = {
        "stale hash": {"hash_of": source + b"\n# edited\n"},
        "timestamp pyc": {"flags": TIMESTAMP},
        "unchecked hash pyc": {"flags": UNCHECKED_HASH},
        "wrong magic": {"magic": b"\x00\x0d\x0d\x0a"},
        "corrupt body": {"body": b"\xff" * 40},
        "not a code object": {"body": marshal.dumps("a string")},
        # Found by tests/fuzz (pyc_header): a code object with a bad field.
        "body marshal fails on with SystemError": {"body": base64.b64decode(
            "4wAAAAAAAAAAAPMMAAAAlwBkACkCRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZG"
            "RkZGRkZGRkZGRkZGRkZGRkZGRkZGRkZGYwMAAAAAAAAAAAAAAAEAAAADAAAA8wYAWwCXZHVsZT5yCwAA"
            "AAEAAABzHoAAAPADAQEB8AIBAQ8AAAEBDfAAAQEN8AABAQ3wAAEBDXIKAAAA")},
        "pyc owned by nobody": {"uid": NOBODY},
        "group-writable pyc": {"mode": 0o664},
        "world-writable __pycache__": {"cache_mode": 0o777},
    }.get(case, {})
    if case.endswith("is a symlink"):
        elsewhere = tmp.subdir("elsewhere")
        target = _write_pyc(elsewhere, source, pyc_code)
        cache = os.path.join(tmp.path, "__pycache__")
        if case.startswith("pyc"):
            os.mkdir(cache, 0o755)
            os.symlink(target, os.path.join(cache, os.path.basename(target)))
        else:
            os.symlink(os.path.dirname(target), cache)
    else:
        _write_pyc(tmp.path, source, pyc_code, **kwargs)
        if case == "__pycache__ owned by nobody":
            os.chown(os.path.join(tmp.path, "__pycache__"), NOBODY, 0)
    assert _which_ran(tmp, pam_confdir) == ["source"]
