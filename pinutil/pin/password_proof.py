"""The enrolment proof: a non-root caller proves their account password through PAM.

`prove_password(user, ask, confdir)` runs one PAM transaction of the service `pinutil`
(pam_authenticate, then pam_acct_mgmt) for `user`, answering its prompts with `ask`.
The shipped /etc/pam.d/pinutil holds pam_unix only (never tpm_pin: a PIN must not
prove itself); pam_unix checks a non-root caller's own password through its set-gid
helper unix_chkpwd, so this works from the set-gid-tss pinutil.

Why not pypam: pinutil's core never imports the PAM-module framework. This is a small
libpam *client* over ctypes (stdlib), used only by setup, never on the login path.

The service file must exist: libpam would otherwise quietly use `other`, which may
hold the PIN module itself. `confdir` is `/etc/pam.d` in the installed command (a
keyword of `cli.main`, never from argv or the environment); tests pass their own.

Answers are copied into C memory that libpam frees, and the Python buffers are wiped.
"""
from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Callable

from pinutil.errors import PasswordRefused, PermissionDenied

SERVICE = "pinutil"
PAM_CONFDIR = "/etc/pam.d"

PAM_SUCCESS = 0
PAM_CONV_ERR = 19
PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2
PAM_ERROR_MSG = 3
PAM_TEXT_INFO = 4
PAM_RUSER = 8
PAM_MAX_NUM_MSG = 32

#: ask(prompt text, echo, style) -> a bytearray answer the caller may wipe, or None
#: for a message that needs no answer (error / info).
Ask = Callable[[str, bool, int], "bytearray | None"]


def wipe(buffer: bytearray) -> None:
    """Overwrite a secret held in a bytearray with zeros, in place."""
    buffer[:] = bytes(len(buffer))


class _Message(ctypes.Structure):
    _fields_ = (("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p))


class _Response(ctypes.Structure):
    _fields_ = (("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int))


_CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int,
                         ctypes.POINTER(ctypes.POINTER(_Message)),
                         ctypes.POINTER(ctypes.POINTER(_Response)), ctypes.c_void_p)


class _Conv(ctypes.Structure):
    _fields_ = (("conv", _CONV), ("appdata_ptr", ctypes.c_void_p))


def _libraries():
    pam = ctypes.CDLL("libpam.so.0", use_errno=True)
    pam.pam_start_confdir.argtypes = (ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.POINTER(_Conv), ctypes.c_char_p,
                                      ctypes.POINTER(ctypes.c_void_p))
    for name in ("pam_authenticate", "pam_acct_mgmt", "pam_end"):
        getattr(pam, name).argtypes = (ctypes.c_void_p, ctypes.c_int)
    pam.pam_set_item.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
    pam.pam_strerror.argtypes = (ctypes.c_void_p, ctypes.c_int)
    pam.pam_strerror.restype = ctypes.c_char_p
    libc = ctypes.CDLL(None)
    libc.calloc.argtypes = (ctypes.c_size_t, ctypes.c_size_t)
    libc.calloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.explicit_bzero.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    return pam, libc


def require_service_file(confdir: str = PAM_CONFDIR) -> str:
    """The service file's path; PermissionDenied naming it when it is absent."""
    path = os.path.join(confdir, SERVICE)
    try:
        present = stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        present = False
    if not present:
        raise PermissionDenied(
            f"{path} is missing: enrolling your own PIN needs your password checked by "
            f"that PAM service (install examples/pam.d/pinutil there), or ask root to "
            f"enrol you")
    return path


class _Conversation:
    """The PAM conversation; never lets an exception cross into C (ctypes would
    turn it into a return value of 0, PAM_SUCCESS)."""

    def __init__(self, ask: Ask, libc) -> None:
        self.ask = ask
        self.libc = libc
        self.error: BaseException | None = None
        self.callback = _CONV(self._entry)

    def _entry(self, *args) -> int:
        # Any arity, any exception: never anything but a PAM code back into C.
        try:
            return self._converse(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised after pam_authenticate
            if self.error is None:
                self.error = e
            return PAM_CONV_ERR

    def _copy_out(self, answer: bytearray) -> int:
        buf = self.libc.calloc(len(answer) + 1, 1)
        if not buf:
            raise MemoryError
        if answer:  # straight from the caller's buffer: no immutable copy to linger
            ctypes.memmove(buf, (ctypes.c_char * len(answer)).from_buffer(answer), len(answer))
        return buf

    def _converse(self, count, messages, responses_out, _appdata) -> int:
        if self.error is not None or not 0 < count <= PAM_MAX_NUM_MSG:
            return PAM_CONV_ERR
        responses = self.libc.calloc(count, ctypes.sizeof(_Response))
        if not responses:
            return PAM_CONV_ERR
        array = ctypes.cast(responses, ctypes.POINTER(_Response))
        try:
            for i in range(count):
                message = messages[i].contents  # Linux-PAM: an array of pointers
                text = (message.msg or b"").decode("utf-8", "replace")
                style = message.msg_style
                if style not in (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON,
                                 PAM_ERROR_MSG, PAM_TEXT_INFO):
                    raise ValueError(f"PAM message style {style}")
                answer = self.ask(text, style == PAM_PROMPT_ECHO_ON, style)
                if answer is not None:
                    try:
                        array[i].resp = self._copy_out(answer)
                    finally:
                        wipe(answer)
            responses_out[0] = array
            return PAM_SUCCESS
        except BaseException as e:  # noqa: BLE001 - re-raised after pam_authenticate
            self.error = e
            for i in range(count):
                if array[i].resp:
                    text = ctypes.string_at(array[i].resp)
                    self.libc.explicit_bzero(array[i].resp, len(text))
                    self.libc.free(array[i].resp)
            self.libc.free(responses)
            return PAM_CONV_ERR


def prove_password(user_name: str, ask: Ask, confdir: str = PAM_CONFDIR) -> None:
    """Return if the PAM service `pinutil` accepts `user_name` (their password, and an
    account that may be used); raise PasswordRefused otherwise. Re-raises what `ask`
    raised (Cancelled, KeyboardInterrupt) after libpam has been closed."""
    require_service_file(confdir)
    pam, libc = _libraries()
    conversation = _Conversation(ask, libc)
    conv = _Conv(conversation.callback, None)
    handle = ctypes.c_void_p()
    rc = pam.pam_start_confdir(SERVICE.encode(), user_name.encode(), ctypes.byref(conv),
                               confdir.encode(), ctypes.byref(handle))
    if rc != PAM_SUCCESS:
        raise PasswordRefused(f"cannot start the PAM service {SERVICE!r} (PAM code {rc})")
    try:
        pam.pam_set_item(handle, PAM_RUSER, ctypes.c_char_p(user_name.encode()))
        rc = pam.pam_authenticate(handle, 0)
        if rc == PAM_SUCCESS:
            rc = pam.pam_acct_mgmt(handle, 0)
        reason = (pam.pam_strerror(handle, rc) or b"").decode("utf-8", "replace")
    finally:
        pam.pam_end(handle, rc)
    if conversation.error is not None:
        raise conversation.error
    if rc != PAM_SUCCESS:
        raise PasswordRefused(f"the password was not accepted ({reason})")
