"""`pinutil master-key ...`: the master key's commands (root only).

    pinutil master-key init [--replace]
    pinutil master-key import [--file PATH]          (--stdin: phrase on stdin)
    pinutil master-key get-user-token USER
    pinutil master-key status [--json]
    pinutil master-key clear-from-tpm                 (asks y/N; --yes skips)
    pinutil master-key clear-from-disk                (asks y/N; --yes skips)

`pinutil.cli.app` checks that the caller is root (real uid 0) before any handler runs,
so before any TPM command. Each handler is thin: arguments -> one call into
`pinutil.master_key.lifecycle` -> the JSON fields of the result ("message" is the human line).

The TPM is reached through pinutild when the policy's `service_socket` exists (so
`pinutil` needs no TPM access of its own, and the key gets the service's authValue
record), else directly, as before the service existed. The recovery file and the
phrase stay here either way: the service only ever sees the secret.

The recovery phrase never appears in argv. `init` shows it on /dev/tty (not stdout,
which may be a log), clears the screen, and asks for it back; with `--yes` it is
printed on stdout and not checked (for scripted installs that store it themselves).
`import` reads it from /dev/tty with echo off, or from stdin with `--stdin`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from datetime import UTC, datetime

from pinutil.errors import Cancelled
from pinutil.master_key import lifecycle
from pinutil.master_key.token import MASTER_KEY_HANDLE, user_token
from pinutil.pin import salt_key

_CLEAR_SCREEN = b"\033[H\033[2J\033[3J"  # home, clear screen, clear scrollback
_PHRASE_TRIES = 2


def _owner_auth(ctx):
    """The owner password for the key's EvictControl (pinutil/owner_auth.py)."""
    from pinutil import owner_auth

    return owner_auth.loader(ctx.policy.owner_auth_file)


def _confirm(ctx, question: str) -> None:
    if ctx.args.yes:
        return
    if not ctx.prompter.confirm(question):
        raise Cancelled("nothing changed")


# --- init ------------------------------------------------------------------------------

def _tty_show_and_check(ctx):
    """The `confirm_phrase` callback of an interactive init: show the phrase once on
    the terminal, wipe it from the screen, and have it typed back."""
    def confirm_phrase(phrase: str) -> None:
        try:
            tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            raise Cancelled("no terminal to show the recovery phrase on "
                             "(use --yes to print it on stdout)") from None
        try:
            words = phrase.split()
            lines = [f"{i + 1:2}. {w:<10}" + ("\n" if i % 4 == 3 else "")
                     for i, w in enumerate(words)]
            os.write(tty, (
                "\nYour master-key RECOVERY PHRASE (24 words). Write it down and keep it\n"
                "safe: with the recovery file it restores every user's keyring token.\n"
                "It is shown only this once.\n\n" + "".join(lines) +
                "\nPress Enter when you have written it down.").encode())
            os.read(tty, 4096)
            os.write(tty, _CLEAR_SCREEN)
        finally:
            os.close(tty)
        for attempt in range(_PHRASE_TRIES):
            typed = ctx.prompter.secret("Type the recovery phrase back: ")
            if " ".join(typed.lower().split()) == phrase:
                return
            print("pinutil: that is not the phrase", file=sys.stderr)
        raise Cancelled("the recovery phrase was not confirmed; nothing was written")
    return confirm_phrase


def cmd_init(ctx) -> dict:
    shown: list[str] = []

    def print_phrase(phrase: str) -> None:
        shown.append(phrase)

    confirm = print_phrase if ctx.args.yes else _tty_show_and_check(ctx)
    path = ctx.policy.master_key_file
    lifecycle.init_master_key(_open_key(ctx), path, confirm_phrase=confirm,
                              replace=ctx.args.replace)
    fields = {"sealed_file": path, "tpm_handle": f"{MASTER_KEY_HANDLE:#x}"}
    message = f"master key created: in the TPM at {fields['tpm_handle']}, recovery file {path}"
    if shown:
        # --yes: the caller asked for the phrase on stdout (and stores it themselves).
        fields["recovery_phrase"] = shown[0]
        message = f"{shown[0]}\n{message}" if not ctx.args.json else message
    if ctx.args.replace:
        message += ("\nEvery user's token has changed: keyrings keyed to the old tokens "
                    "no longer open with it.")
    return {**fields, "message": message}


# --- the other commands --------------------------------------------------------------

_AUTH_TEXT = {
    "recorded": "its authorisation value is known to root and pinutild only ({})",
    "empty": ("no recorded authorisation value (pinpam's empty one): anyone with TPM "
              "access can derive every token; `pinutil master-key import` gives it one"),
    "mismatch": ("NOT the key recorded in {}: no token is given; "
                 "`pinutil master-key import` restores the recorded state"),
}


def cmd_import(ctx) -> dict:
    path = ctx.args.file or ctx.policy.master_key_file
    phrase = ctx.prompter.secret("Recovery phrase: ")
    loaded = lifecycle.import_master_key(_open_key(ctx), path, phrase)
    message = ("master key imported into the TPM" if loaded
               else "the TPM already holds this master key; nothing changed")
    return {"sealed_file": path, "loaded": loaded, "message": message}


def cmd_get_user_token(ctx) -> dict:
    if _through_service(ctx):
        from pinutil.service import client

        token = client.master_key_token(ctx.policy.service_socket, ctx.args.token_user,
                                        SERVICE_SECONDS)
    else:
        token = user_token(ctx.policy.tcti, ctx.args.token_user,
                           salt_key_name=salt_key.recorded_name_if_any(ctx.policy),
                           auth_path=ctx.policy.master_key_auth_file,
                           owner_auth=_owner_auth(ctx))
    return {"token_user": ctx.args.token_user, "token": token, "message": token}


def cmd_status(ctx) -> dict:
    st = lifecycle.master_key_status(_open_key(ctx), ctx.policy.master_key_file)
    tpm_line = ({True: "present", False: "absent", None: f"unknown ({st.tpm_error})"}
                [st.in_tpm])
    if st.in_tpm:
        tpm_line += "; " + _AUTH_TEXT[st.tpm_auth].format(ctx.policy.master_key_auth_file)
    if not st.file_present:
        file_line = "absent"
    elif st.file_error:
        file_line = f"unusable ({st.file_error})"
    else:
        created = datetime.fromtimestamp(st.file_created_unix_ms / 1000, UTC)
        file_line = f"present, created {created:%Y-%m-%d %H:%M:%S} UTC"
    message = (f"master key in TPM ({st.tpm_handle}): {tpm_line}\n"
               f"recovery file {st.sealed_file}: {file_line}")
    return {"in_tpm": st.in_tpm, "tpm_auth": st.tpm_auth, "tpm_error": st.tpm_error,
            "tpm_handle": st.tpm_handle,
            "sealed_file": st.sealed_file, "file_present": st.file_present,
            "file_created_unix_ms": st.file_created_unix_ms, "file_error": st.file_error,
            "message": message}


def cmd_clear_from_tpm(ctx) -> dict:
    _confirm(ctx, "Remove the master key from the TPM? Keyrings keyed to the tokens "
                  "will not open until the recovery file is imported again. [y/N] ")
    removed = lifecycle.clear_from_tpm(_open_key(ctx))
    return {"removed": removed,
            "message": "master key removed from the TPM" if removed
            else "no master key in the TPM; nothing changed"}


def cmd_clear_from_disk(ctx) -> dict:
    path = ctx.policy.master_key_file
    _confirm(ctx, f"Delete the recovery file {path}? Without it the master key cannot "
                  "be recovered if the TPM is lost. [y/N] ")
    removed = lifecycle.clear_from_disk(path)
    return {"removed": removed, "sealed_file": path,
            "message": f"recovery file {path} deleted" if removed
            else f"no recovery file at {path}; nothing changed"}


# --- how the commands reach the TPM ------------------------------------------------------

#: A master-key command through pinutild waits at most this long for its answer (the
#: service bounds its TPM time itself: --tpm-timeout).
SERVICE_SECONDS = 30.0


class _ServiceKey:
    """The TPM half of the master key through pinutild (lifecycle.py's `open_key`
    protocol), for `pinutil` without TPM access of its own."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def _ask(self, verb: str, **fields) -> dict:
        from pinutil import errors
        from pinutil.service import client

        reply = client.call(self.socket_path, {"verb": verb, **fields}, SERVICE_SECONDS)
        if reply.get("result") != "success":
            raise errors.from_json(reply)
        return reply

    def exists(self) -> bool:
        return self.state()[0]

    def state(self) -> tuple[bool, str | None]:
        reply = self._ask("master-key-status")
        return reply["in_tpm"] is True, reply["tpm_auth"]

    def load(self, secret: bytes, replace: bool = False) -> bool:
        return self._ask("master-key-load", secret=secret, replace=replace)["loaded"] is True

    def clear(self) -> bool:
        return self._ask("master-key-clear")["removed"] is True


def _through_service(ctx) -> bool:
    """The service when its socket exists (as tpm_pin's backend=auto), else the TPM."""
    if not os.path.exists(ctx.policy.service_socket):
        return False
    ctx.note(f"through pinutild at {ctx.policy.service_socket}")
    return True


def _open_key(ctx):
    """How the commands reach the key in the TPM (lifecycle.py, `open_key`)."""
    if _through_service(ctx):
        key = _ServiceKey(ctx.policy.service_socket)
        return lambda: contextlib.nullcontext(key)
    return lifecycle.direct_key(ctx.policy.tcti, ctx.policy.master_key_auth_file,
                                salt_key.recorded_name_if_any(ctx.policy),
                                owner_auth=_owner_auth(ctx))


# --- parser ---------------------------------------------------------------------------

def add_parser(subparsers) -> None:
    """Register `master-key` and its subcommands on pinutil's subparsers."""
    group = subparsers.add_parser(
        "master-key", help="manage the TPM master key that derives keyring tokens (root)",
        allow_abbrev=False)
    sub = group.add_subparsers(dest="master_key_command", metavar="ACTION",
                               parser_class=type(group))
    sub.required = True

    p = sub.add_parser("init", help="create the master key and its recovery phrase",
                       allow_abbrev=False)
    p.add_argument("--replace", action="store_true",
                   help="replace an existing master key (every token changes)")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("import", help="load the recovery file into this TPM",
                       allow_abbrev=False)
    p.add_argument("--file", metavar="PATH",
                   help="recovery file (default: the policy's master_key_file)")
    p.add_argument("--stdin", action="store_true", default=argparse.SUPPRESS,
                   help="read the recovery phrase from standard input")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("get-user-token", help="print a user's token", allow_abbrev=False)
    p.add_argument("token_user", metavar="USER", help="user name (as PAM_USER)")
    p.set_defaults(handler=cmd_get_user_token)

    p = sub.add_parser("status", help="show the key in the TPM and on disk",
                       allow_abbrev=False)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON object")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("clear-from-tpm", help="evict the master key from the TPM",
                       allow_abbrev=False)
    p.set_defaults(handler=cmd_clear_from_tpm)

    p = sub.add_parser("clear-from-disk", help="delete the recovery file",
                       allow_abbrev=False)
    p.set_defaults(handler=cmd_clear_from_disk)

