"""`PamHandle`: what a pypam module gets as `pamh`.

The attribute names here are a public contract: modules written against them must keep
working. Everything goes straight to libpam through cffi; nothing is cached in Python
except the module's own `data`.
"""
from __future__ import annotations

from . import handle_data
from .constants import (
    PAM_AUTHTOK,
    PAM_AUTHTOK_TYPE,
    PAM_BAD_ITEM,
    PAM_CONV,
    PAM_CONV_ERR,
    PAM_ERROR_MSG,
    PAM_MAX_NUM_MSG,
    PAM_OLDAUTHTOK,
    PAM_RHOST,
    PAM_RUSER,
    PAM_SERVICE,
    PAM_SUCCESS,
    PAM_TEXT_INFO,
    PAM_TTY,
    PAM_USER,
    PAM_USER_PROMPT,
    PAM_XAUTHDATA,
    PAM_XDISPLAY,
)
from .conversation import Message, Response
from .errors import PamError
from .libpam import ffi, libc, pam
from .text import decode, encode

# C0 and C1 control characters and DEL as visible escapes (NUL included: a C string).
_ESCAPE_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}


class _StringItem:
    """A string PAM item as a property; None means unset."""

    def __init__(self, item: int) -> None:
        self.item = item

    def __get__(self, pamh: PamHandle | None, owner=None):
        if pamh is None:
            return self
        slot = ffi.new("const void **")
        rc = pam.pam_get_item(pamh._h, self.item, slot)
        if rc != PAM_SUCCESS:
            raise PamError(rc)
        if slot[0] == ffi.NULL:
            return None
        return decode(ffi.string(ffi.cast("const char *", slot[0])))

    def __set__(self, pamh: PamHandle, value: str | None) -> None:
        if value is None and self.item == PAM_SERVICE:
            # libpam (1.5.2) lowercases the new service name without a NULL check:
            # unsetting PAM_SERVICE would crash the host process.
            raise PamError(PAM_BAD_ITEM)
        raw = ffi.NULL if value is None else ffi.new("char[]", encode(value))
        rc = pam.pam_set_item(pamh._h, self.item, raw)
        if raw != ffi.NULL:
            # libpam keeps its own copy; wipe ours (it may be a PIN or a token).
            libc.explicit_bzero(raw, len(raw))
        if rc != PAM_SUCCESS:
            raise PamError(rc)


class PamHandle:
    """One PAM transaction, seen from one pypam module."""

    service = _StringItem(PAM_SERVICE)
    user = _StringItem(PAM_USER)
    user_prompt = _StringItem(PAM_USER_PROMPT)
    tty = _StringItem(PAM_TTY)
    rhost = _StringItem(PAM_RHOST)
    ruser = _StringItem(PAM_RUSER)
    authtok = _StringItem(PAM_AUTHTOK)
    oldauthtok = _StringItem(PAM_OLDAUTHTOK)
    xdisplay = _StringItem(PAM_XDISPLAY)
    authtok_type = _StringItem(PAM_AUTHTOK_TYPE)

    def __init__(self, address: int, module: str, args: list[str] | None = None) -> None:
        self._h = ffi.cast("pam_handle_t *", address)
        self.module = module
        self._debug = "debug" in (args or ())
        self._logger = None

    # -- items that are not plain strings -------------------------------------------
    @property
    def xauthdata(self) -> tuple[str, bytes] | None:
        """PAM_XAUTHDATA as (name, data), or None."""
        slot = ffi.new("const void **")
        rc = pam.pam_get_item(self._h, PAM_XAUTHDATA, slot)
        if rc != PAM_SUCCESS:
            raise PamError(rc)
        if slot[0] == ffi.NULL:
            return None
        xa = ffi.cast("struct pam_xauth_data *", slot[0])
        name = decode(ffi.buffer(xa.name, xa.namelen)[:]) if xa.name != ffi.NULL else ""
        data = ffi.buffer(xa.data, xa.datalen)[:] if xa.data != ffi.NULL else b""
        return name, data

    @xauthdata.setter
    def xauthdata(self, value: tuple[str, bytes]) -> None:
        name, data = encode(value[0]), bytes(value[1])
        c_name, c_data = ffi.new("char[]", name), ffi.new("char[]", data)
        xa = ffi.new("struct pam_xauth_data *", {
            "namelen": len(name), "name": c_name, "datalen": len(data), "data": c_data,
        })
        rc = pam.pam_set_item(self._h, PAM_XAUTHDATA, xa)
        libc.explicit_bzero(c_data, len(data))
        if rc != PAM_SUCCESS:
            raise PamError(rc)

    # -- libpam helpers ---------------------------------------------------------------
    def get_user(self, prompt: str | None = None) -> str:
        """pam_get_user: the user name, asking through the conversation if unset."""
        if self.user is None:
            self._require_conversation()
        out = ffi.new("const char **")
        rc = pam.pam_get_user(self._h, out, ffi.NULL if prompt is None else encode(prompt))
        if rc != PAM_SUCCESS:
            raise PamError(rc)
        if out[0] == ffi.NULL:
            raise PamError(PAM_CONV_ERR)
        return decode(ffi.string(out[0]))

    def get_authtok(self, prompt: str | None = None) -> str:
        """pam_get_authtok(PAM_AUTHTOK): the token, asking if unset (honours use_first_pass...)."""
        out = ffi.new("const char **")
        rc = pam.pam_get_authtok(self._h, PAM_AUTHTOK, out,
                                 ffi.NULL if prompt is None else encode(prompt))
        if rc != PAM_SUCCESS:
            raise PamError(rc)
        if out[0] == ffi.NULL:
            raise PamError(PAM_CONV_ERR)
        return decode(ffi.string(out[0]))

    def _require_conversation(self) -> None:
        # libpam (1.5.2) pam_get_user calls the application's conv function without a
        # NULL check when it prompts: a host without one would crash (SIGSEGV).
        # (pam_get_authtok checks it itself and returns PAM_AUTHTOK_ERR.)
        slot = ffi.new("const void **")
        rc = pam.pam_get_item(self._h, PAM_CONV, slot)
        if rc != PAM_SUCCESS or slot[0] == ffi.NULL \
                or ffi.cast("struct pam_conv *", slot[0]).conv == ffi.NULL:
            raise PamError(PAM_CONV_ERR)

    def fail_delay(self, usec: int) -> None:
        rc = pam.pam_fail_delay(self._h, usec)
        if rc != PAM_SUCCESS:
            raise PamError(rc)

    def strerror(self, code: int) -> str:
        return decode(ffi.string(pam.pam_strerror(self._h, code)))

    # -- conversation -----------------------------------------------------------------
    def conversation(self, messages: Message | list[Message]) -> Response | list[Response]:
        """Ask the application; one Message gives one Response, a list gives a list.

        Any failure (no conversation function, an error from it, no responses) raises
        PamError(PAM_CONV_ERR or the code it returned). Answers are wiped and freed in
        C memory before this returns.
        """
        single = isinstance(messages, Message)
        batch = [messages] if single else list(messages)
        if not 0 < len(batch) <= PAM_MAX_NUM_MSG:
            raise ValueError(f"a conversation takes 1 to {PAM_MAX_NUM_MSG} messages")
        slot = ffi.new("const void **")
        rc = pam.pam_get_item(self._h, PAM_CONV, slot)
        if rc != PAM_SUCCESS or slot[0] == ffi.NULL:
            raise PamError(PAM_CONV_ERR)
        conv = ffi.cast("struct pam_conv *", slot[0])
        if conv.conv == ffi.NULL:
            raise PamError(PAM_CONV_ERR)

        texts = [ffi.new("char[]", encode(m.text)) for m in batch]
        msgs = ffi.new("struct pam_message[]", len(batch))
        ptrs = ffi.new("const struct pam_message *[]", len(batch))
        for i, m in enumerate(batch):
            msgs[i].msg_style = int(m.style)
            msgs[i].msg = texts[i]
            ptrs[i] = msgs + i
        resp_out = ffi.new("struct pam_response **")
        rc = conv.conv(len(batch), ptrs, resp_out, conv.appdata_ptr)
        answers = _take_responses(resp_out[0], len(batch))
        if rc != PAM_SUCCESS:
            raise PamError(rc if 0 < rc < 32 else PAM_CONV_ERR)
        if answers is None:
            raise PamError(PAM_CONV_ERR)
        return answers[0] if single else answers

    def prompt(self, text: str, echo: bool = False) -> str:
        """Ask one question; a missing answer raises PamError(PAM_CONV_ERR)."""
        answer = self.conversation(Message.prompt(text, echo))
        if answer.resp is None:
            raise PamError(PAM_CONV_ERR)
        return answer.resp

    def info(self, text: str) -> None:
        self.conversation(Message(PAM_TEXT_INFO, text))

    def error(self, text: str) -> None:
        self.conversation(Message(PAM_ERROR_MSG, text))

    # -- environment and data ---------------------------------------------------------
    @property
    def env(self) -> PamEnv:  # noqa: F821 - imported on first use
        """The PAM environment as a mutable mapping."""
        from .env import (
            PamEnv,  # collections.abc costs ~1.3 ms a login; few modules use env
        )

        return PamEnv(self._h)

    @property
    def data(self) -> dict:
        """Python objects private to this module on this handle, dropped at pam_end."""
        return handle_data.module_data(self._h, self.module)

    def shared_data(self, name: str) -> dict:
        """Python objects that every pypam module on this handle sees under `name`
        (e.g. one TPM time budget for a whole login), dropped at pam_end."""
        return handle_data.module_data(self._h, f"shared:{name}")  # ":" is in no module name

    # -- logging ----------------------------------------------------------------------
    def syslog(self, priority: int, message: str) -> None:
        """One line to syslog (LOG_AUTHPRIV through pam_syslog), tagged with the module.
        Control characters are escaped: messages carry names a client chose (PAM_USER),
        and "x\\nPIN accepted for root" must not become a second line in the journal."""
        line = encode(f"[{self.module}] {message}".translate(_ESCAPE_CONTROLS))
        pam.pam_syslog(self._h, priority, b"%s", ffi.new("char[]", line))

    @property
    def logger(self) -> logging.Logger:  # noqa: F821 - imported lazily
        """A logging.Logger writing to pam_syslog; DEBUG only with a `debug` argument."""
        if self._logger is None:
            from .log import make_logger

            self._logger = make_logger(self)
        return self._logger

    @property
    def debug(self) -> bool:
        return self._debug


def _take_responses(resp, count: int) -> list[Response] | None:
    """Copy the answers out, then wipe and free them as libpam expects of a module."""
    if resp == ffi.NULL:
        return None
    answers = []
    for i in range(count):
        text = resp[i].resp
        if text == ffi.NULL:
            answers.append(Response(None, resp[i].resp_retcode))
            continue
        answers.append(Response(decode(ffi.string(text)), resp[i].resp_retcode))
        libc.explicit_bzero(text, libc.strlen(text))
        libc.free(text)
    libc.free(resp)
    return answers

