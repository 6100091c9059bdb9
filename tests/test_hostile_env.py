"""A set-id host run by `nobody` with a hostile environment: pam_pypam must not care.

A temporary setuid-root copy of build/pamhost (in a root-owned 0755 directory) is run
through `setpriv --reuid=nobody --regid=nogroup --clear-groups`, so the process has
AT_SECURE, euid 0 and a caller-controlled environment, like sudo or su. Every planted
piece of code (a fake standard library beside a fake `python3` first in PATH,
PYTHONPATH/PYTHONHOME/PYTHONSTARTUP/PYTHONUSERBASE/HOME contents, an LD_PRELOAD
library) creates a file in a marker directory when it runs.

The proof that the planting works is Debian's pam_python (libpam-python) in the same
run: it starts Python without fixed paths, so the PATH case runs the planted standard
library as root there (embedding-facts.md) and its marker appears.

Also here: the host's signal mask and dispositions, and fds 0/1/2, are left alone.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.support.accounts import AS_NOBODY
from tests.support.pam_python import PAM_PYTHON_SO
from tests.support.pamhost import (
    PAM_AUTH_ERR,
    PAM_SUCCESS,
    PamService,
    build_host,
    run_pam,
)
from tests.support.pypam_stacks import assert_trusted_modules, pypam_service, reports

SERVICE = "pypam-hostile"
PYVER = sysconfig.get_config_var("VERSION")  # "3.11": the shim's and pam_python's
STDLIB = f"/usr/lib/python{PYVER}"
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def as_nobody_with(env: Mapping[str, str]) -> list[str]:
    """Drop to nobody, then set `env` with env(1) right before exec'ing the host, so
    the helpers in between (sh, setpriv) never see it (LD_PRELOAD would run in them)."""
    return [*AS_NOBODY, "/usr/bin/env", *(f"{k}={v}" for k, v in env.items())]


# -- the planted tree -------------------------------------------------------------------
def marker_code(markers: str, name: str) -> str:
    """Python that records `name` in `markers`, using only builtin modules (it may run
    before the standard library is importable)."""
    return (
        "import posix as _p\n"
        f"_fd = _p.open({markers!r} + '/{name}-euid' + str(_p.geteuid()),"
        " _p.O_WRONLY | _p.O_CREAT, 0o644)\n"
        "_p.close(_fd)\n"
        "del _p, _fd\n"
    )


def wrapper_code(markers: str, name: str, real: str) -> str:
    """Marker, then the real module's code, so the interpreter still works."""
    return marker_code(markers, name) + (
        "def _pypam_read(path):\n"
        "    import posix\n"
        "    fd = posix.open(path, posix.O_RDONLY)\n"
        "    chunks = []\n"
        "    while True:\n"
        "        chunk = posix.read(fd, 1 << 16)\n"
        "        if not chunk:\n"
        "            break\n"
        "        chunks.append(chunk)\n"
        "    posix.close(fd)\n"
        "    return b''.join(chunks)\n"
        f"exec(compile(_pypam_read({real!r}), {real!r}, 'exec'))\n"
        "del _pypam_read\n"
    )


def _write(path: str, text: str, mode: int = 0o644) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def plant_stdlib(lib: str, markers: str) -> None:
    """`lib` = <prefix>/lib/pythonX.Y: the real stdlib by symlinks, except os.py,
    site.py, sitecustomize.py and encodings/__init__.py, which mark and then run the
    real code (os and site are frozen in 3.11, encodings and sitecustomize are not)."""
    planted = {"os.py", "site.py", "sitecustomize.py", "encodings"}
    os.makedirs(lib)
    for name in os.listdir(STDLIB):
        if name not in planted and name != "__pycache__":
            os.symlink(os.path.join(STDLIB, name), os.path.join(lib, name))
    for name in ("os", "site"):
        _write(os.path.join(lib, f"{name}.py"),
               wrapper_code(markers, f"stdlib-{name}", f"{STDLIB}/{name}.py"))
    _write(os.path.join(lib, "sitecustomize.py"), marker_code(markers, "stdlib-sitecustomize"))
    enc = os.path.join(lib, "encodings")
    os.makedirs(enc)
    for name in os.listdir(os.path.join(STDLIB, "encodings")):
        if name not in ("__init__.py", "__pycache__"):
            os.symlink(os.path.join(STDLIB, "encodings", name), os.path.join(enc, name))
    _write(os.path.join(enc, "__init__.py"), wrapper_code(
        markers, "stdlib-encodings", f"{STDLIB}/encodings/__init__.py"))


PRELOAD_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void)
{
    int fd = open(MARKER, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) close(fd);
}
"""


class Planted:
    """Everything a hostile caller would prepare, under one root-owned 0755 directory."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="pypam-hostile-", dir="/tmp")
        try:
            self._build()
        except BaseException:
            self.remove()
            raise

    def _build(self) -> None:
        os.chmod(self.root, 0o755)
        def j(*parts: str) -> str:
            return os.path.join(self.root, *parts)
        self.markers = j("markers")
        os.mkdir(self.markers, 0o755)
        # The set-id host: root-owned, 04755, in a root-owned 0755 directory.
        self.host = j("pamhost")
        shutil.copy(build_host(), self.host)
        os.chown(self.host, 0, 0)
        os.chmod(self.host, 0o4755)
        # A fake prefix: bin/python3 (first in PATH) beside lib/pythonX.Y.
        self.fake = j("fake")
        _write(j("fake", "bin", "python3"), "#!/bin/sh\nexit 0\n", 0o755)
        os.symlink("python3", j("fake", "bin", f"python{PYVER}"))
        plant_stdlib(j("fake", "lib", f"python{PYVER}"), self.markers)
        os.makedirs(j("fake", "lib", f"python{PYVER}", "site-packages"), exist_ok=True)
        # PYTHONPATH: modules pypam and the stdlib would import, shadowed.
        self.pythonpath = j("pythonpath")
        for name in ("encodings/__init__", "pypam/__init__", "_cffi_backend", "cffi/__init__",
                     "sitecustomize", "usercustomize", "json/__init__", "traceback", "enum",
                     "re/__init__", "types", "dataclasses", "logging/__init__", "syslog",
                     "hashlib", "threading", "io", "abc", "codecs"):
            _write(j("pythonpath", f"{name}.py"),
                   marker_code(self.markers, "pythonpath-" + name.split("/")[0]))
        self.startup = _write(j("startup.py"), marker_code(self.markers, "pythonstartup"))
        # PYTHONUSERBASE and HOME: user site with a .pth line and usercustomize.
        self.userbase = j("userbase")
        self.home = j("home")
        for base, tag in ((self.userbase, "userbase"), (j("home", ".local"), "home")):
            site = os.path.join(base, "lib", f"python{PYVER}", "site-packages")
            _write(os.path.join(site, "usercustomize.py"),
                   marker_code(self.markers, f"{tag}-usercustomize"))
            marker = os.path.join(self.markers, f"{tag}-pth")
            _write(os.path.join(site, "planted.pth"),
                   f"import posix; posix.close(posix.open({marker!r}, posix.O_WRONLY"
                   " | posix.O_CREAT))\n")
        self.tmpdir = j("tmpdir")
        os.mkdir(self.tmpdir)
        os.chmod(self.tmpdir, 0o1777)
        self.tss_dir = j("tss")
        os.mkdir(self.tss_dir)
        os.chmod(self.tss_dir, 0o1777)
        self.tss_log = j("tss", "x")
        self.preload_dir = j("preload")
        os.mkdir(self.preload_dir, 0o755)
        self.preload = j("preload", "libplanted.so")
        source = _write(j("preload", "planted.c"), PRELOAD_C)
        subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKER="{self.markers}/ld-preload"',
                        "-o", self.preload, source], check=True)
        # pam_python's module (it loads modules by absolute path).
        self.pam_python_module = _write(j("pam_python_trivial.py"), (
            "def pam_sm_authenticate(pamh, flags, argv):\n    return pamh.PAM_SUCCESS\n"))
        os.mkdir(j("pam.d"))
        self.confdir = PamService(j("pam.d"))

    def environments(self) -> dict[str, dict[str, str]]:
        """Scenario name -> variables added to the clean environment."""
        single = {
            "PATH": {"PATH": f"{self.fake}/bin:{CLEAN_PATH}"},
            "PYTHONPATH": {"PYTHONPATH": self.pythonpath},
            "PYTHONHOME": {"PYTHONHOME": self.fake},
            "PYTHONSTARTUP+PYTHONINSPECT": {"PYTHONSTARTUP": self.startup,
                                            "PYTHONINSPECT": "1"},
            "PYTHONUSERBASE": {"PYTHONUSERBASE": self.userbase},
            "HOME": {"HOME": self.home},
            "TSS2_LOG": {"TSS2_LOG": "all+trace", "TSS2_LOGFILE": self.tss_log},
            "TMPDIR": {"TMPDIR": self.tmpdir},
            "LC_ALL": {"LC_ALL": "tr_TR.ISO-8859-9", "LANG": "tr_TR.ISO-8859-9",
                       "LC_CTYPE": "tr_TR.ISO-8859-9"},
            "PYTHON-runtime": {"PYTHONVERBOSE": "1", "PYTHONWARNINGS": "error",
                               "PYTHONDEVMODE": "1", "PYTHONMALLOC": "debug",
                               "PYTHONFAULTHANDLER": "1", "PYTHONPLATLIBDIR": "evil",
                               "PYTHONIOENCODING": "latin-1", "PYTHONUTF8": "0",
                               "PYTHONTRACEMALLOC": "5", "PYTHONDEBUG": "1"},
            "LD": {"LD_PRELOAD": self.preload, "LD_LIBRARY_PATH": self.preload_dir},
        }
        everything: dict[str, str] = {}
        for variables in single.values():
            everything.update(variables)
        return {**single, "everything": everything}

    def markers_found(self) -> list[str]:
        return sorted(os.listdir(self.markers))

    def side_effects(self) -> list[str]:
        """Markers, plus anything created in TMPDIR or as the TSS2 log file."""
        found = [f"marker:{m}" for m in self.markers_found()]
        found += [f"tmpdir:{n}" for n in os.listdir(self.tmpdir)]
        found += [f"tss:{n}" for n in os.listdir(self.tss_dir)]
        return found

    def reset(self) -> None:
        for d in (self.markers, self.tmpdir, self.tss_dir):
            for name in os.listdir(d):
                os.remove(os.path.join(d, name))

    def run(self, env: Mapping[str, str], answers=("right",), prefix=(),
            **kw: Any) -> dict[str, Any]:
        """The set-id host as nobody, with `env` on top of the clean environment."""
        return run_pam(self.confdir, SERVICE, user="nobody", answers=list(answers),
                       prefix=[*prefix, *as_nobody_with(env)], host=self.host, timeout=30,
                       **kw)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def planted() -> Iterator[Planted]:
    assert_trusted_modules()
    tree = Planted()
    try:
        yield tree
    finally:
        tree.remove()


@pytest.fixture
def fresh(planted) -> Planted:
    planted.reset()
    return planted


def essentials(report: Mapping[str, Any]) -> dict[str, Any]:
    """What must not depend on the environment (timings, pid and RSS may)."""
    keys = ("start", "stages", "end", "messages", "items", "item_rc", "conv_calls",
            "answers_used", "failures", "exit_status", "stdout", "stderr")
    return {k: report[k] for k in keys}


# -- the control: the harness really is set-id, and pam_python falls for PATH -------------
def test_host_copy_is_setuid_root_in_a_root_owned_directory(planted):
    st = os.stat(planted.host)
    assert st.st_uid == 0 and st.st_mode & stat.S_ISUID
    parent = os.stat(planted.root)
    assert parent.st_uid == 0 and stat.S_IMODE(parent.st_mode) == 0o755


def test_the_caller_really_is_nobody(fresh):
    # pam_rootok succeeds only for real uid 0: refused here, so setpriv took effect
    # (and the markers' "-euid0" suffix shows the effective uid is still root).
    fresh.confdir.write(SERVICE, "auth required pam_rootok.so\n")
    assert fresh.run({})["stages"][0]["rc"] == PAM_AUTH_ERR
    assert run_pam(fresh.confdir, SERVICE)["stages"][0]["rc"] == PAM_SUCCESS  # as root


def _pam_python_run(planted: Planted, env: Mapping[str, str]) -> dict[str, Any]:
    planted.confdir.write(SERVICE, f"auth required {PAM_PYTHON_SO} {planted.pam_python_module}\n")
    return planted.run(env, check=False)


def test_pam_python_is_exploitable_by_path_and_pypam_is_not(fresh):
    """The central claim, in one test: the same planted PATH runs code as root through
    Debian's pam_python and does nothing through pam_pypam."""
    path_env = fresh.environments()["PATH"]
    _pam_python_run(fresh, {})
    assert fresh.markers_found() == []  # clean: pam_python itself is not the marker
    _pam_python_run(fresh, path_env)
    found = fresh.markers_found()
    assert found, "planted stdlib did not run through pam_python: the test proves nothing"
    assert "stdlib-encodings-euid0" in found  # attacker code ran with euid 0

    fresh.reset()
    fresh.confdir.write(SERVICE, pypam_service("environment_report"))
    clean = fresh.run({})
    hostile = fresh.run(path_env)
    assert fresh.side_effects() == []
    assert essentials(hostile) == essentials(clean)
    assert clean["stages"][0]["rc"] == PAM_SUCCESS


@pytest.mark.parametrize("scenario", [
    "PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP+PYTHONINSPECT", "PYTHONUSERBASE",
    "HOME", "TSS2_LOG", "TMPDIR", "LC_ALL", "PYTHON-runtime", "LD", "everything",
])
def test_hostile_environment_has_no_effect_on_pypam(fresh, scenario):
    fresh.confdir.write(SERVICE, pypam_service("environment_report"))
    clean = fresh.run({})
    assert fresh.side_effects() == []
    hostile = fresh.run(fresh.environments()[scenario])
    assert fresh.side_effects() == []
    assert essentials(hostile) == essentials(clean)
    [seen] = reports(clean)
    assert seen["prefix"] == seen["base_prefix"] == "/usr"
    assert not any(fresh.root in p for p in seen["path"])
    # And the result is still the module's own verdict.
    wrong = fresh.run(fresh.environments()[scenario], answers=("wrong",))
    assert wrong["stages"][0]["rc"] == PAM_AUTH_ERR


def test_ld_preload_planting_is_live_without_set_id(fresh):
    # The control for the LD case: the same library, given to a program that is not
    # set-id, does run (so its absence above is the loader's secure mode at work).
    subprocess.run(["/usr/bin/env", f"LD_PRELOAD={fresh.preload}", "/bin/true"], check=True)
    assert fresh.markers_found() == ["ld-preload"]


# -- signals ----------------------------------------------------------------------------
def _preset_signals() -> None:
    """Runs in the host's child before exec: a non-default state to be preserved, on
    top of defaults (pytest-xdist workers ignore SIGINT and SIGQUIT; a run under nohup
    or `&` inherits ignored SIGHUP, SIGINT and SIGQUIT)."""
    for sig in signal.valid_signals():
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP, glibc's internal ones
            pass
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGUSR2, signal.SIGTERM})


@pytest.mark.parametrize("module", ["trivial", "imports_signal", "thread_worker",
                                    "raise_keyboardinterrupt", "prints"])
def test_signal_mask_and_dispositions_are_unchanged(pam_confdir, module):
    pam_confdir.write(SERVICE, pypam_service(module))
    report = run_pam(pam_confdir, SERVICE, stages=("auth", "auth"), preexec=_preset_signals,
                     extra_args=["--report-signals"])
    before = report["signals_before"]
    assert before == {"blocked": [signal.SIGUSR2, signal.SIGTERM],
                      "handlers": {str(int(signal.SIGUSR1)): "ignore flags=0"}}
    assert report["signals_after"] == before


def test_signal_check_sees_a_module_that_changes_them(pam_confdir):
    # The control: the same report does show a change when a module makes one.
    pam_confdir.write(SERVICE, pypam_service("changes_signals"))
    report = run_pam(pam_confdir, SERVICE, preexec=_preset_signals,
                     extra_args=["--report-signals"])
    assert report["stages"][0]["rc"] == PAM_SUCCESS
    assert report["signals_after"] != report["signals_before"]
    assert signal.SIGWINCH in report["signals_after"]["blocked"]
    assert str(int(signal.SIGUSR1)) not in report["signals_after"]["handlers"]


def test_signals_unchanged_under_the_hostile_set_id_run(fresh):
    fresh.confdir.write(SERVICE, pypam_service("imports_signal"))
    report = fresh.run(fresh.environments()["everything"], extra_args=["--report-signals"])
    assert report["stages"][0]["rc"] == PAM_SUCCESS
    assert report["signals_after"] == report["signals_before"]


# -- fds 0/1/2 --------------------------------------------------------------------------
def _stdin_rw(path: str) -> list[str]:
    """A prefix that opens `path` read-write as the host's fd 0 (so a write would land)."""
    return ["sh", "-c", 'f=$1; shift; exec "$@" 0<>"$f"', "sh", path]


@pytest.mark.parametrize("stage", ["auth", "acct"])  # acct: print, then an uncaught raise
def test_a_module_that_prints_writes_nothing_on_fds_0_1_2(pam_confdir, tmp_path, stage):
    stdin_file = tmp_path / "stdin"
    stdin_file.write_bytes(b"")
    pam_confdir.write(SERVICE, pypam_service("prints"))
    report = run_pam(pam_confdir, SERVICE, stages=(stage,), prefix=_stdin_rw(str(stdin_file)))
    assert report["stages"][0]["rc"] == (PAM_SUCCESS if stage == "auth" else 3)
    assert report["stdout"] == "" and report["stderr"] == ""
    assert stdin_file.read_bytes() == b""


def test_fd_check_sees_a_module_that_writes(pam_confdir, tmp_path):
    # The control: a module writing to the raw fds is seen on all three.
    stdin_file = tmp_path / "stdin"
    stdin_file.write_bytes(b"")
    pam_confdir.write(SERVICE, pypam_service("writes_fds"))
    report = run_pam(pam_confdir, SERVICE, prefix=_stdin_rw(str(stdin_file)))
    assert report["stdout"] == "RAW-FD1" and report["stderr"] == "RAW-FD2"
    assert stdin_file.read_bytes() == b"RAW-FD0"


def test_prints_under_the_hostile_set_id_run_write_nothing(fresh, tmp_path):
    stdin_file = os.path.join(fresh.tmpdir, "..", "stdin-file")
    with open(stdin_file, "wb"):
        pass
    try:
        fresh.confdir.write(SERVICE, pypam_service("prints"))
        report = fresh.run(fresh.environments()["everything"],
                           prefix=_stdin_rw(stdin_file))
        assert report["stages"][0]["rc"] == PAM_SUCCESS
        assert report["stdout"] == "" and report["stderr"] == ""
        with open(stdin_file, "rb") as f:
            assert f.read() == b""
        assert fresh.side_effects() == []
    finally:
        os.remove(stdin_file)
