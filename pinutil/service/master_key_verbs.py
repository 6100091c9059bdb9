"""pinutild's master-key verbs: the keyring token and the key's administration.

All of them are for root callers only (peer.py: a set-uid root peer counts as its real
uid), refused before any TPM command: a token derives a user's keyring, and the
administration replaces or removes every user's. They run pinutil's core
(master_key/token.py, master_key/lifecycle.py) on the worker's TPM connection:

    master-key-token   user                -> token (64 lowercase hex digits)
    master-key-status                      -> in_tpm, tpm_auth (recorded | empty |
                                              mismatch, or none without a key)
    master-key-load    secret, replace     -> loaded (false: the TPM already held it)
    master-key-clear                       -> removed

`master-key-load` gets the 32-byte secret from `pinutil` (root), which generated it
(`init`) or decrypted it from the recovery file with the phrase (`import`): the
service never sees the recovery file or the phrase. It creates the key with a random
authValue and keeps that in the authorisation record in its own state directory
(master_key/auth_record.py), so only root and the service can derive tokens.
"""
from __future__ import annotations

from pinutil import errors, users
from pinutil.users import User


def _key(ctx, tpm, admin: bool = True):
    """The master key on the worker's TPM, with the service's salt key record and
    authorisation record (MasterKey for the token: no admin code on that path)."""
    from pinutil.pin import salt_key

    if admin:
        from pinutil.master_key.lifecycle import MasterKeyAdmin as kind
    else:
        from pinutil.master_key.token import MasterKey as kind
    return kind(tpm, salt_key_name=salt_key.recorded_name_if_any(ctx.policy),
                auth_path=ctx.policy.master_key_auth_file)


def token(ctx, caller: User, fields: dict) -> dict:
    """The keyring token of `user` (HMAC of the name under the master key): for root
    callers only (display managers, login and sshd run as root), so raw access to the
    service never derives a user's token."""
    if not caller.is_root:
        raise errors.PermissionDenied("only root may ask for a keyring token")
    # The name as PAM_USER gives it, account or not (as `pinutil master-key
    # get-user-token` computes it): a token is a function of the name alone.
    with ctx.open_tpm() as tpm:
        return {"token": _key(ctx, tpm, admin=False).token_for(fields["user"])}


def status(ctx, caller: User, fields: dict) -> dict:
    users.may_manage_master_key(caller)
    with ctx.open_tpm() as tpm:
        in_tpm, auth = _key(ctx, tpm).state()
    return {"in_tpm": in_tpm, "tpm_auth": auth}


def load(ctx, caller: User, fields: dict) -> dict:
    users.may_manage_master_key(caller)
    with ctx.open_tpm() as tpm:
        return {"loaded": _key(ctx, tpm).load(fields["secret"], replace=fields["replace"])}


def clear(ctx, caller: User, fields: dict) -> dict:
    users.may_manage_master_key(caller)
    with ctx.open_tpm() as tpm:
        return {"removed": _key(ctx, tpm).clear()}
