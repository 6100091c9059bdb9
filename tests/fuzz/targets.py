"""Fuzz targets: every parser that reads untrusted or admin input (issue 9).

Each target takes the fuzzer's bytes and either returns normally (a valid result,
checked here) or raises the parser's own domain error; anything else is a bug. The
pinutil/pypam modules are imported by tests/fuzz/run.py under atheris's coverage
instrumentation, then looked up here.
"""
from __future__ import annotations

import _imp
import marshal
import os
import types

from pinutil import errors
from pinutil.cli.app import StdinPrompter
from pinutil.errors import Cancelled
from pinutil.master_key import recovery
from pinutil.pin.local_login import (
    HelperReply,
    helper_reply,
    pin_status_from,
    raise_for_check,
)
from pinutil.pin.policy import Policy, PolicyError, parse_policy
from pinutil.pin.status import PinStatus
from pinutil.service import protocol, verbs
from pypam import loader
from pypam.arguments import ArgumentError, ModuleArguments, parse_arguments


def policy_file(data: bytes) -> None:
    """A policy file's bytes, decoded and parsed as load_policy does after its checks."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # load_policy's own PolicyError: not the parser's input
    try:
        policy = parse_policy(text, "<fuzz>")
    except PolicyError:
        return
    assert isinstance(policy, Policy)
    assert 1 <= policy.pin_min_length <= policy.pin_max_length


def sealed_recovery_file(data: bytes) -> None:
    """The master key's recovery file (read by root, may come from a backup)."""
    try:
        fields = recovery.parse_sealed(data)
    except errors.MasterKeyError:
        return
    assert fields["version"] == recovery.FORMAT_VERSION
    assert len(fields["salt"]) == recovery.SALT_SIZE


def recovery_phrase(data: bytes) -> None:
    """The 24-word phrase an admin types at `master-key import`."""
    phrase = data.decode("utf-8", "surrogateescape")
    try:
        entropy = recovery.entropy_from_phrase(phrase)
    except errors.MasterKeyError:
        return
    assert len(entropy) == recovery.SECRET_SIZE
    assert recovery.entropy_from_phrase(recovery.phrase_from_entropy(entropy)) == entropy


def helper_reply_json(data: bytes) -> None:
    """What the PAM module reads back from the `pinutil` helper: exit status (first
    byte) and stdout, interpreted for `status` and for `test`."""
    if not data:
        return
    try:
        reply = helper_reply(data[0], data[1:])
    except errors.TpmUnavailable:
        return
    assert isinstance(reply, HelperReply) and isinstance(reply.fields, dict)
    try:
        status = pin_status_from(reply)
    except errors.PinutilError:
        pass
    else:
        assert isinstance(status, PinStatus)
    try:
        raise_for_check(reply)
    except errors.PinutilError:
        return
    # Only an exit status of 0 together with a "success" line lets a PIN in.
    assert reply.exit_code == 0 and reply.fields.get("result") == "success"


def helper_stdin(data: bytes) -> None:
    """`pinutil --stdin`: the PIN (and a confirmation) one per line on standard input."""
    if len(data) > 60000:  # one pipe's worth: the writer below must not block
        data = data[:60000]
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
        os.close(write_end)
        write_end = -1
        prompter = StdinPrompter(read_end)
        for ask in (prompter.secret, prompter.confirm, prompter.secret):
            try:
                answer = ask("?")
            except (Cancelled, errors.InvalidPin):
                continue
            assert isinstance(answer, (str, bool))
            assert not isinstance(answer, str) or "\n" not in answer
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def _warn(message: str) -> None:
    """Where the modules' argument parsers send an unknown argument (syslog in PAM)."""
    assert isinstance(message, str)


def pamd_arguments(data: bytes) -> None:
    """A pam.d line's arguments (C strings: split at NUL; decoded as the shim does),
    through pam_pypam's own parser and the two modules' parsers."""
    argv = [a.decode("utf-8", "surrogateescape") for a in data.split(b"\0")]
    try:
        parsed = parse_arguments(argv, "/usr/lib/pypam/modules")
    except ArgumentError:
        pass
    else:
        assert isinstance(parsed, ModuleArguments)
        assert os.path.isabs(parsed.moduledir) and ".." not in parsed.moduledir.split("/")
    import master_key
    import tpm_pin

    for module in (tpm_pin, master_key):  # both through pypam's one parser
        try:
            options = module.ARGUMENTS.parse(argv, warn=_warn)
        except ArgumentError:
            continue
        assert options["policy"] is None or options["policy"].startswith("/")


_SOURCE = b"def authenticate(pamh, flags, args):\n    return 0\n"
_HEADER = (loader.MAGIC_NUMBER + (0b11).to_bytes(4, "little")
           + _imp.source_hash(loader._SOURCE_HASH_KEY, _SOURCE))
_BODY = marshal.dumps(compile(_SOURCE, "module.py", "exec"))


def pyc_header(data: bytes) -> None:
    """A module's __pycache__ pyc, which the loader uses only when it is a checked-hash
    pyc of exactly this source. Odd first byte: the rest is the whole file (the header
    checks). Even: a good header with the body cut short where the next two bytes say
    (a torn write). Not fuzzed: a crafted body behind a matching hash, which only root
    can place (the directory is vetted) and which marshal does not promise to survive
    (a declared tuple of 2**31 items exhausts memory)."""
    if not data:
        return
    if data[0] & 1:
        blob = data[1:]
    else:
        cut = int.from_bytes(data[1:3].ljust(2, b"\0"), "little") % (len(_BODY) + 1)
        blob = _HEADER + _BODY[:cut]
    code = loader._code_from_bytecode(blob, _SOURCE)
    assert code is None or isinstance(code, types.CodeType)


def pinutild_request(data: bytes) -> None:
    """A request as pinutild reads it from any local user: header, body, verb check.
    What decodes re-encodes to the very same bytes (one encoding per value)."""
    try:
        length = protocol.body_length(data[:protocol.HEADER_SIZE])
    except protocol.ProtocolError:
        return
    if len(data) != protocol.HEADER_SIZE + length:
        return  # the service would wait for the rest, or see the client leave
    try:
        fields = protocol.decode_body(data[protocol.HEADER_SIZE:])
    except protocol.ProtocolError:
        return
    assert protocol.encode(fields) == data
    try:
        function, _ = verbs.parse_request(fields)
    except verbs.BadRequest:
        return
    assert callable(function) and fields["verb"] in verbs.VERBS


def pinutild_server(data: bytes) -> None:
    """A script of clients for pinutild's event loop (tests/fuzz/server_harness.py)."""
    from tests.fuzz import server_harness

    server_harness.run(data)


TARGETS = {
    "policy": policy_file,
    "recovery_file": sealed_recovery_file,
    "recovery_phrase": recovery_phrase,
    "helper_reply": helper_reply_json,
    "helper_stdin": helper_stdin,
    "pamd_arguments": pamd_arguments,
    "pyc_header": pyc_header,
    "pinutild_request": pinutild_request,
    "pinutild_server": pinutild_server,
}
