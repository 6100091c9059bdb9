"""Checklist 2: the set-gid `pinutil` launcher started by a hostile caller.

argc == 0, an argv[0] naming a fake prefix with a planted standard library, fds 0/1/2
closed, a 1 MB argument, and PYTHON*/TSS2_* variables: the launcher must exit cleanly
with a pinutil exit code, run no planted code, create no file, and derive nothing
from argv[0] or the environment. The launcher under test is a temporary set-gid copy
of a fresh build, run as `nobody`.
"""
import grp
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from tests.support.accounts import AS_NOBODY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "shim"))
import build_native

USAGE, UNAVAILABLE, UNKNOWN_USER = 2, 9, 10

# Runs argv[2:] as the program argv[1] with fds 0-2 closed or argc == 0, as an
# attacker can: these states cannot be reached from Python's exec functions.
EXEC_HELPER = r"""
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 3) return 111;
    char *empty[] = {NULL};
    if (strcmp(argv[1], "argc0") == 0) { execv(argv[2], empty); return 112; }
    if (strcmp(argv[1], "noio") == 0) {
        close(0); close(1); close(2);
        execv(argv[2], argv + 3); return 113;
    }
    return 114;
}
"""

PLANT = "open({marker!r}, 'w').write('planted code ran')\n"


@pytest.fixture(scope="module")
def lab():
    """A root-owned 0755 directory with a set-gid copy of the launcher (its built-in
    policy names a TPM that does not exist, so every TPM step fails fast) and the
    exec helper."""
    work = tempfile.mkdtemp(prefix="pypam-launcher-", dir="/tmp")
    os.chmod(work, 0o755)
    policy = os.path.join(work, "policy")
    with open(policy, "w") as f:
        f.write(f"tcti = swtpm:path={work}/no-such-tpm\n")
    os.chmod(policy, 0o644)
    launcher = os.path.join(work, "pinutil")
    search = [ROOT, sysconfig.get_path("purelib")]  # the venv's site-packages
    build_native.build_launcher(launcher, search + build_native.stdlib_paths(),
                                os.path.join(ROOT, "modules"), policy_path=policy)
    os.chown(launcher, 0, grp.getgrnam("tss").gr_gid)
    os.chmod(launcher, 0o2755)
    helper = os.path.join(work, "exec-helper")
    source = os.path.join(work, "exec-helper.c")
    with open(source, "w") as f:
        f.write(EXEC_HELPER)
    subprocess.run(["gcc", "-O2", "-o", helper, source], check=True)
    try:
        yield {"dir": work, "launcher": launcher, "helper": helper}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(argv, env=None, **kwargs):
    return subprocess.run([*AS_NOBODY, *argv], env=env or {"PATH": "/usr/bin:/bin"},
                          capture_output=True, timeout=60, check=False, **kwargs)


def assert_clean_exit(done, *codes):
    assert done.returncode in codes, (done.returncode, done.stderr[-500:])
    assert b"Traceback" not in done.stderr


def test_launcher_is_setgid_tss(lab):
    st = os.stat(lab["launcher"])
    assert st.st_mode & 0o2000 and st.st_gid == grp.getgrnam("tss").gr_gid


def test_argc_zero_is_a_usage_error(lab):
    done = run([lab["helper"], "argc0", lab["launcher"]])
    assert_clean_exit(done, USAGE)


def test_closed_stdio_still_exits_with_a_pinutil_code(lab):
    # `status` for an unknown user: the launcher must reopen fds 0-2 itself and run.
    done = run([lab["helper"], "noio", lab["launcher"], "pinutil", "status", "no-such-user"])
    assert done.returncode == UNKNOWN_USER, done.returncode


def test_one_megabyte_of_arguments_is_refused_cleanly(lab):
    # Linux caps one argument at 128 KiB: 16 x 64 KiB make the megabyte.
    done = run([lab["launcher"], "status", *(["x" * (64 << 10)] * 16)])
    assert_clean_exit(done, USAGE)


def test_one_huge_user_name_is_refused_cleanly(lab):
    done = run([lab["launcher"], "status", "x" * (120 << 10)])
    assert_clean_exit(done, UNKNOWN_USER)
    assert len(done.stderr) < 4096  # one line, not the name echoed back


def test_argv0_and_environment_cannot_plant_code(lab, tmp_path_factory):
    fake = tempfile.mkdtemp(prefix="pypam-fakeprefix-", dir="/tmp")
    os.chmod(fake, 0o755)
    marker = os.path.join(fake, "marker")
    logfile = os.path.join(fake, "tss.log")
    try:
        stdlib = os.path.join(fake, "lib", f"python{sysconfig.get_config_var('VERSION')}")
        os.makedirs(os.path.join(stdlib, "encodings"))
        os.makedirs(os.path.join(fake, "bin"))
        for name in ("os.py", "site.py", "sitecustomize.py", "usercustomize.py",
                     "encodings/__init__.py", "pinutil.py"):
            with open(os.path.join(stdlib, name), "w") as f:
                f.write(PLANT.format(marker=marker))
        shutil.copy(os.path.join(stdlib, "os.py"), os.path.join(fake, "startup.py"))
        os.symlink(lab["launcher"], os.path.join(fake, "bin", "python3"))
        os.chmod(fake, 0o777)  # nobody may write its marker there
        hostile = {
            "PATH": f"{fake}/bin:/usr/bin:/bin", "PYTHONPATH": stdlib, "PYTHONHOME": fake,
            "PYTHONSTARTUP": os.path.join(fake, "startup.py"), "PYTHONINSPECT": "1",
            "PYTHONUSERBASE": fake, "TSS2_LOG": "all+trace", "TSS2_LOGFILE": logfile,
            "HOME": fake, "TMPDIR": fake, "LC_ALL": "C",
        }
        # argv[0] names the fake prefix's python3 (exec -a), the env points there too.
        done = run(["bash", "-c", f'exec -a "{fake}/bin/python3" "$0" status', lab["launcher"]],
                   env=hostile)
        clean = run([lab["launcher"], "status"])
        assert not os.path.exists(marker), "planted code ran in the set-gid launcher"
        assert not os.path.exists(logfile), "a caller's TSS2_LOGFILE was honoured"
        assert (done.returncode, done.stdout) == (clean.returncode, clean.stdout)
        assert done.returncode == UNAVAILABLE  # it really ran: status, TPM unreachable
    finally:
        shutil.rmtree(fake, ignore_errors=True)
