"""`pinutil migrate-state` (root): move the enrolment records and the salt key record
from where they were to the service's state directory (pin/migrate.py says how and
why it is crash-safe), bind records written before they named their salt key to the
recorded one, and the master key's authorisation record from its old
default place to the policy's (master_key/auth_record.py). The package's postinst and
`make install` run it; running it again does nothing more."""
from __future__ import annotations

from pinutil.cli.options import add_common_options
from pinutil.errors import PermissionDenied
from pinutil.master_key import auth_record
from pinutil.pin import migrate


def cmd_migrate(ctx) -> dict:
    if not ctx.caller.is_root:
        raise PermissionDenied("only root may move the state")
    report = migrate.migrate(ctx.policy, ctx.policy_path)
    auth_record.move_legacy(ctx.policy.master_key_auth_file, report)
    lines = [f"moved {item}" for item in report["moved"]] + \
        [f"kept {item}" for item in report["kept"]] + \
        [f"bound the enrolment of {user} to the recorded salt key" for user in report["bound"]] + \
        [f"problem: {item}" for item in report["problems"]]
    return {**report, "state_dir": ctx.policy.state_dir,
            "message": "\n".join(lines) or f"nothing to move to {ctx.policy.state_dir}"}


def add_parser(subparsers) -> None:
    """Register `migrate-state` on pinutil's subparsers."""
    leaf = subparsers.add_parser("migrate-state", allow_abbrev=False,
                                 help="move records from the old places to state_dir (root)")
    add_common_options(leaf, on_command=True)
    leaf.set_defaults(handler=cmd_migrate)
