"""`pinutil owner ...` (root): give the TPM's owner and lockout hierarchies passwords
that only root and pinutild hold, or take them back (pinutil/owner_auth.py says why).

    pinutil owner protect   random passwords for both hierarchies, the owner's kept in
                            the policy's owner_auth_file, the lockout's in FILE.lockout
                            (root only); refused when a hierarchy already has a
                            password we do not hold; when already protected, moves a
                            lockout line of the layout before out of FILE and gives
                            FILE to group pinutild (0640) if that group exists and the
                            file is not its yet
    pinutil owner release   both back to the empty password, the file removed (before
                            an uninstall, or before clearing the TPM from the OS)

Crash safety: protect writes the new passwords to `FILE.new` (atomically) BEFORE it
changes anything in the TPM, and writes FILE.lockout and FILE from it (then removes it)
only once both hierarchies have them; release changes the TPM first and removes the
files last. Protect changes only an
empty password and release only a set one, so the TPM's TPMA_PERMANENT bits
(ownerAuthSet, lockoutAuthSet) say which of the two files' passwords each hierarchy
holds after a kill at any point, and running the same command again finishes it.
No password is ever tried: a wrong lockout password would lock that hierarchy out.
The new passwords cross the bus only encrypted, in a session salted with the storage
primary, which must have the recorded salt key's Name when one is recorded (a TPM that
shows another key is refused before anything changes); with no record yet, the TPM's
own key (protect, like `salt-key record`, belongs to a time nobody alters the TPM's
answers; nothing is recorded here).

Also `owner_state(ctx, tpm)`, which `pinutil status` reports.
"""
from __future__ import annotations

import os

from pinutil import owner_auth
from pinutil.cli.options import add_actions
from pinutil.errors import PermissionDenied, PinutilError, TpmUnavailable, one_line
from pinutil.pin.salt_key import recorded_name_if_any


def _unknown_password(hierarchies: list[str], path: str) -> PermissionDenied:
    names = " and ".join(hierarchies)
    return PermissionDenied(
        f"the TPM's {names} hierarchy already has a password that {path} does not hold: "
        "pinutil will not guess it (a wrong lockout password locks the TPM's lockout "
        "hierarchy out). Whoever set it can remove it (e.g. `tpm2_changeauth -c o -p OLD`), "
        "or clear the TPM from the firmware, then run `pinutil owner protect`")


def cmd_protect(ctx) -> dict:
    path = ctx.policy.owner_auth_file
    pending_path = owner_auth.pending_path(path)
    current = owner_auth.load(path)  # an unusable file is an error here: nothing changed
    with ctx.open_tpm() as tpm:
        state = tpm.hierarchy_auth_set()
        target = owner_auth.load(pending_path)  # an interrupted protect: finish it
        if target is None:
            if current is not None and all(state.values()):
                tpm.use_owner_auth(current.owner)
                if not tpm.owner_auth_accepted():
                    raise _unknown_password(["owner"], path)
                platform = _platform_warning(tpm)
                message = f"the TPM owner hierarchy is already protected ({path})"
                changed = owner_auth.holds_lockout(path)  # the layout before: move it out
                if changed:
                    owner_auth.save(path, current)
                    message += (f"; the lockout password is now in "
                                f"{owner_auth.lockout_path(path)} (root only)")
                if owner_auth.grant_service_group(path):  # protected before the service
                    changed = True
                    message += f"; the file is now readable by group {owner_auth.SERVICE_GROUP}"
                return {"changed": changed, "file": path, **platform,
                        "message": message + _warning_text(platform)}
            if any(state.values()):
                raise _unknown_password([n for n, s in state.items() if s], path)
            target = owner_auth.new_passwords()
            owner_auth.write_pending(path, target)  # before the TPM: never unknown
        # A set owner password is the pending one (an interrupted protect): the lockout
        # change's salted session needs it (Tpm.change_hierarchy_auth).
        tpm.use_owner_auth(target.owner if state["owner"] else b"")
        salt_key_name = recorded_name_if_any(ctx.policy)
        for name in owner_auth.NAMES:
            if not state[name]:  # set: it holds the pending password already
                tpm.change_hierarchy_auth(name, b"", getattr(target, name), salt_key_name)
        if not all(tpm.hierarchy_auth_set().values()):
            raise TpmUnavailable("the TPM did not keep the new hierarchy passwords; "
                                 f"{pending_path} holds them: run `pinutil owner protect` again")
        platform = _platform_warning(tpm)
    owner_auth.commit_pending(path)
    return {"changed": True, "file": path, **platform,
            "message": f"TPM owner and lockout hierarchies protected; the owner password "
                       f"is in {path} (readable by root and {owner_auth.SERVICE_GROUP} only), "
                       f"the lockout password in {owner_auth.lockout_path(path)} (root only)"
                       + _warning_text(platform)}


PLATFORM_OPEN = ("platform hierarchy open: owner protection can be bypassed by anyone "
                 "with TPM access")


def _platform_warning(tpm) -> dict:
    """{"platform_open": bool} and, when open, a "warning" for the message (README,
    The owner hierarchy: Limits)."""
    if not tpm.platform_hierarchy_open():
        return {"platform_open": False}
    return {"platform_open": True, "warning": PLATFORM_OPEN}


def _warning_text(platform: dict) -> str:
    return f"; WARNING: {platform['warning']}" if "warning" in platform else ""


def cmd_release(ctx) -> dict:
    path = ctx.policy.owner_auth_file
    if os.path.lexists(owner_auth.pending_path(path)):
        raise PermissionDenied(f"{owner_auth.pending_path(path)} exists: an interrupted "
                               "`pinutil owner protect`; run it again first")
    current = owner_auth.load(path)
    with ctx.open_tpm() as tpm:
        state = tpm.hierarchy_auth_set()
        if current is None:
            if any(state.values()):
                raise _unknown_password([n for n, s in state.items() if s], path)
            return {"changed": False, "message": "the TPM owner hierarchy has no password"}
        # An owner released before a kill has the empty password, whatever FILE says.
        tpm.use_owner_auth(current.owner if state["owner"] else b"")
        if state["owner"] and not tpm.owner_auth_accepted():  # a wrong one counts nothing
            raise _unknown_password(["owner"], path)
        salt_key_name = recorded_name_if_any(ctx.policy)
        for name in owner_auth.NAMES:
            if state[name]:  # clear: released before a kill; the file still says it
                tpm.change_hierarchy_auth(name, getattr(current, name), b"", salt_key_name)
    owner_auth.remove(path)
    return {"changed": True,
            "message": f"TPM owner and lockout hierarchies released (empty passwords); "
                       f"{path} removed"}


def owner_state(ctx, tpm) -> dict:
    """For `pinutil status`: whether the owner hierarchy has a password, and whether we
    hold it. Never raises for the file or the TPM: what went wrong is in the fields."""
    path = ctx.policy.owner_auth_file
    fields: dict = {"file": path}
    try:
        state = tpm.hierarchy_auth_set()
        fields.update(protected=state["owner"], lockout_protected=state["lockout"],
                      platform_open=tpm.platform_hierarchy_open())
    except PinutilError as e:
        fields.update(protected=None, lockout_protected=None, error=one_line(str(e)))
        return fields
    if os.path.lexists(owner_auth.pending_path(path)):
        fields["pending"] = True  # an interrupted protect
    try:
        owner = owner_auth.load_owner(path)
    except TpmUnavailable as e:
        withheld = isinstance(e, owner_auth.OwnerAuthWithheld)
        fields.update(password="unreadable" if withheld else "unusable",
                      error=one_line(str(e)))
        return fields
    if owner is None:
        fields["password"] = "unknown" if state["owner"] else "none"
        return fields
    tpm.use_owner_auth(owner)
    fields["password"] = "held" if tpm.owner_auth_accepted() else "refused"
    return fields


def describe(fields: dict) -> str:
    """One phrase for status's human line."""
    if fields.get("protected") is None:
        return "owner hierarchy: state unknown"
    if not fields["protected"]:
        text = "owner hierarchy not protected (`pinutil owner protect`)"
    else:
        text = {"held": "owner hierarchy protected, password held",
                "refused": f"owner hierarchy protected, the TPM REFUSES {fields['file']}",
                "unknown": "owner hierarchy protected by a password pinutil does not hold",
                "unreadable": "owner hierarchy protected (password not readable here)",
                "unusable": f"owner hierarchy protected, {fields['file']} unusable"}.get(
                    fields.get("password"), "owner hierarchy protected")
    if fields.get("pending"):
        text += "; an interrupted `pinutil owner protect`: run it again"
    if fields.get("platform_open") and fields["protected"]:  # nothing to bypass otherwise
        text += f"; {PLATFORM_OPEN}"
    return text


def add_parser(subparsers) -> None:
    """Register `owner` and its actions on pinutil's subparsers."""
    add_actions(subparsers, "owner", "protect the TPM owner hierarchy (root)", (
        ("protect", cmd_protect, "give the owner and lockout hierarchies passwords"),
        ("release", cmd_release, "set both back to empty and remove the file")))
