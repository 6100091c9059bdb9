"""`pinutil salt-key ...`: record and show the salt key every salted PIN check trusts.

    pinutil salt-key record     (root) make the salt key persistent if needed and
                                record its Name in the state directory (salt_key.py);
                                names the users whose enrolments were made under
                                another key (void: pin/enrolment.py)
    pinutil salt-key show       (root) the recorded Name and the TPM's, and whether
                                they match

Also `recorded_salt_key_name(ctx, tpm)`, which `pinutil.cli.app` uses for every command
that sends a PIN: the record, or on root's `setup` when there is none yet the TPM's key,
recorded first (trust on first use: the rule is `salt_key.trusted_name` in the core).
"""
from __future__ import annotations

from pinutil.cli.options import add_actions
from pinutil.errors import TpmUnavailable
from pinutil.pin import enrolment, salt_key
from pinutil.tpm import sapi


def recorded_salt_key_name(ctx, tpm) -> bytes:
    path = ctx.policy.salt_key_record
    # Not made persistent here: setup does that once, after the enrolment.
    name, recorded_now = salt_key.trusted_name(
        path, lambda: sapi.salt_key_name(tpm, persist=False),
        trust_on_first_use=ctx.args.command == "setup" and ctx.caller.is_root)
    if recorded_now:
        ctx.note(f"recorded the salt key {name.hex()} in {path}")
    return name


def _open(ctx):
    return ctx.open_tpm()


def cmd_record(ctx) -> dict:
    path = ctx.policy.salt_key_record
    with _open(ctx) as tpm:
        name = sapi.salt_key_name(tpm)
    try:
        before = salt_key.load_if_present(path)
    except TpmUnavailable:
        before = None  # an unusable record is replaced
    records = ctx.policy.enrolment_dir
    if before is not None:
        # Records from before they named their salt key were made under `before`.
        enrolment.bind_unbound(records, before)
    salt_key.save(path, name)
    changed = before is not None and before != name
    void = enrolment.made_under_another_key(records, name)
    message = f"salt key {name.hex()} recorded in {path}"
    if changed:
        message += f" (it was {before.hex()})"
    if void:
        message += (f"; the PINs of {', '.join(void)} were enrolled under another salt key "
                    "and no longer log in (a TPM Clear deleted them): `pinutil delete`, "
                    "then users enrol again")
    return {"name": name.hex(), "record": path, "replaced": changed, "void": void,
            "message": message}


def cmd_show(ctx) -> dict:
    path = ctx.policy.salt_key_record
    try:
        recorded = salt_key.load(path)
    except TpmUnavailable as e:
        recorded, problem = None, str(e)
    with _open(ctx) as tpm:
        current = sapi.salt_key_name(tpm, persist=False)
    matches = recorded == current
    message = (f"salt key {current.hex()}: " + ("matches the record" if matches else
               f"NOT the recorded one ({recorded.hex()})" if recorded else problem))
    return {"name": current.hex(), "recorded": recorded.hex() if recorded else None,
            "record": path, "matches": matches, "message": message}


def add_parser(subparsers) -> None:
    """Register `salt-key` and its actions on pinutil's subparsers."""
    add_actions(subparsers, "salt-key", "record or show the TPM's salt key (root)", (
        ("record", cmd_record, "record the TPM's salt key"),
        ("show", cmd_show, "compare the record with the TPM")))
