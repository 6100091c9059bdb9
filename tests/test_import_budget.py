"""The import budget of every PAM hook of the shipped modules, through the real shim.

For each hook of tpm_pin and master_key, one fresh host process (build/pamhost, real
libpam, build/pam_pypam.so) runs the hook on a working setup (a swtpm, root's PIN
enrolled and typed), then devtools' reporter module records what pam_pypam's
interpreter holds (devtools/imports.py). Whatever the hook imported beyond CPython's
own start-up must be in the explicit allow-lists below: the login path cannot regrow
silently. A new import there fails this test until it is added here, on purpose, with
its cost in mind (`make bench` prints the cost per hook: bench/imports.py).

What a forked TPM worker imports after the fork is not seen here (it dies with its
child); tpm_pin's direct backend imports the TPM binding before forking, so it is.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from devtools.imports import (
    HOOKS,
    PYTHON,
    hook_imports,
    reporter_only_imports,
    top_level,
)

PIN = "2580"

#: What pam_pypam itself (the shim, pypam's dispatcher, loader and handle, cffi's
#: backend for libpam) may add to CPython's start-up, whatever the module.
FRAMEWORK = {
    "__future__", "_cffi_backend", "_collections_abc", "_stat", "errno", "genericpath",
    "itertools", "os", "posixpath", "pypam", "stat", "syslog", "types",
}

#: tpm_pin imports its core at load time (every hook loads the module), without the
#: TPM code: only a login that uses the direct backend loads the binding.
TPM_PIN_LOADED = {"pinutil", "pwd"}
#: The builtin SHA-256 is `_sha256` until Python 3.11 (Debian 12), `_sha2` since 3.12
#: (Debian 13): one name per interpreter, the one this interpreter has.
BUILTIN_SHA256 = "_sha2" if sys.version_info >= (3, 12) else "_sha256"
TPM_BINDING = {"struct", "_struct", BUILTIN_SHA256, "_operator", "select"}  # and pinutil.tpm
#: The TPM binding and the modules that send commands through it.
TPM_CODE = ("pinutil.tpm._tss", "pinutil.tpm.context", "pinutil.tpm.sapi")
#: master_key imports pinutil only inside authenticate (a broken install must still
#: end in PAM_IGNORE); `pwd` to know the service user, who may own the salt key record
#: it reads (pinutil/pin/state.py).
MASTER_KEY_AUTHENTICATE = {"pinutil", "pwd"} | TPM_BINDING

#: (module, hook) -> the top-level modules it may add to FRAMEWORK.
ALLOWED = {
    **{("tpm_pin", hook): TPM_PIN_LOADED for hook in HOOKS},
    ("tpm_pin", "authenticate"): TPM_PIN_LOADED | TPM_BINDING,  # the direct backend
    **{("master_key", hook): set() for hook in HOOKS},
    ("master_key", "authenticate"): MASTER_KEY_AUTHENTICATE,
}

#: A module only a hook that reached the core imports.
RAN_THE_CORE = {"tpm_pin": "pinutil.pin.login", "master_key": "pinutil.deadline"}

#: Our own packages that are admin-only and must never be on a login path.
NEVER = ("pinutil.cli", "pypam.stack")


@pytest.fixture(scope="module")
def startup() -> set[str]:
    """CPython's own start-up modules, as the shim starts it (isolated, no site)."""
    done = subprocess.run([*PYTHON, "-c", "import sys; print(' '.join(sys.modules))"],
                          capture_output=True, text=True, check=True, env={}, cwd="/")
    return top_level(done.stdout.split())


def added(names: list[str], startup: set[str]) -> set[str]:
    return top_level(names) - startup


def test_the_framework_alone_stays_within_its_budget(pam_confdir, startup):
    names = reporter_only_imports(pam_confdir)
    assert "pypam.dispatch" in names  # the reporter ran through pypam
    assert added(names, startup) <= FRAMEWORK, added(names, startup) - FRAMEWORK
    assert not [n for n in names if n.startswith(NEVER)]


@pytest.mark.parametrize("module", ["tpm_pin", "master_key"])
def test_every_hook_stays_within_its_budget(pin_env, module, startup):
    pin_env.enrol("root", PIN)
    for hook in HOOKS:
        names = hook_imports(pin_env.pamd, f"module={module} policy={pin_env.policy}", hook,
                             answers=[PIN])
        if hook == "authenticate":  # it really reached the core (lazily, for master_key)
            assert RAN_THE_CORE[module] in names, names
        extra = added(names, startup) - FRAMEWORK
        assert extra <= ALLOWED[module, hook], (module, hook, extra - ALLOWED[module, hook])
        assert not [n for n in names if n.startswith(NEVER)], (module, hook)
        if hook != "authenticate":  # no TPM code for a hook that sends no TPM command
            assert not [n for n in names if n.startswith(TPM_CODE)], (module, hook)


#: Everything of ours a PIN login through pinutild (backend=daemon) loads: the policy
#: reader, the service's client and protocol, the error vocabulary, whom a root host acts
#: for, the login's time budget, pypam's handle. Nothing only the direct or helper backend
#: needs (the TPM binding, the fork machinery's users, setid, the TPM layer, the user
#: lookup, the PIN status record), nothing only an error path needs. A new module here is a cost on every login: add it on purpose.
DAEMON_LOGIN = {
    "pinutil", "pinutil.errors", "pinutil.deadline", "pinutil.record", "pinutil.securefile",
    "pinutil.pin", "pinutil.pin.policy", "pinutil.pin.login", "pinutil.service",
    "pinutil.service.requester", "pinutil.service.client", "pinutil.service.protocol",
    "pinutil.tpm",  # the package alone: the owner NV range (constants, no imports)
    "pinutil.pin.prompt",  # the PIN prompt texts, no imports: only these are shown
}
#: What it may add to FRAMEWORK besides: `_socket` (the builtin behind `socket`, without
#: its enum wrapper). Not `pwd` nor pinutil.users: the service looks the user up.
DAEMON_LOGIN_STDLIB = {"_socket"}


def test_a_login_through_the_service_loads_only_its_own_path(pin_env, pinutild_policy,
                                                              startup):
    pin_env.enrol("root", PIN)
    names = hook_imports(pin_env.pamd, f"module=tpm_pin policy={pin_env.policy} "
                         "backend=daemon", "authenticate", answers=[PIN])
    ours = {n for n in names if top_level([n]) & {"pinutil"}}
    assert "pinutil.service.client" in ours, names  # it really asked the service
    assert ours <= DAEMON_LOGIN, sorted(ours - DAEMON_LOGIN)
    extra = added(names, startup) - FRAMEWORK
    assert extra <= {"pinutil"} | DAEMON_LOGIN_STDLIB, extra
