"""PIN login for a PAM module: through the service, in a forked child, or via the
helper; `choose_backend` picks one.

Three backends run the same login, `login(name, read_pin)`: refuse (an unknown user,
another user's PIN, no PIN, an index not recorded as the user's, a locked PIN), or ask
for the PIN through `read_pin(prompt)` with the prompt the status gives and check it,
with the same domain errors, so the PAM adapter has one code path:

- `DaemonBackend` (here) asks pinutild over its socket (pinutil.service), one
  connection per login: no TPM code, no TPM access and no set-id helper in this
  process, so it also works in sandboxed hosts (NoNewPrivileges, a private /dev);
  chosen by `auto` whenever the socket exists. This module holds only it and the
  choice: it is what a login through the service loads (tests/test_import_budget.py);
- `DirectBackend` and `HelperBackend` (local_login.py) read the status and check the
  PIN as two questions, from a forked child of this process or through the set-gid
  `pinutil` launcher.

All spend one `TpmBudget` per login (shared with master_key; the user's typing is not
TPM time), and each sends a PIN to the TPM at most once: a check that timed out is
never retried. The service's and the helper's errors come back through
`errors.from_json`: the JSON `result` token names the class (pinutil/errors.py), an
unknown one is TpmUnavailable.
"""
from __future__ import annotations

import os

from pinutil import errors

TYPE_CHECKING = False  # typing's own constant, without importing typing (~1 ms)
if TYPE_CHECKING:
    from pinutil.deadline import TpmBudget
    from pinutil.pin.policy import Policy

BACKENDS = ("auto", "direct", "helper", "daemon")


class DaemonBackend:
    """pinutild (pinutil.service) over its socket: this process loads no TPM code and
    needs no access to the TPM, no set-id helper and no /dev (docs/pinutild.md). A
    login is one connection (pin-login: the service reads the status, prompts through
    `read_pin`, checks); its errors are the helper's result tokens (errors.from_json)."""

    name = "daemon"

    def __init__(self, policy: Policy, budget: TpmBudget, on_behalf_of: int | None = None) -> None:
        self.policy = policy
        self.budget = budget
        # The uid a root host acts for (pinutil.service.requester): the service applies
        # its rules to that uid, not to root.
        self.on_behalf_of = on_behalf_of

    def login(self, name: str, read_pin) -> None:
        from pinutil.pin.prompt import known_prompt
        from pinutil.service import client

        def read_known_prompt(text: str):
            prompt = known_prompt(text)
            if prompt is None:  # shown in gdm, login, su: never the service's own text
                raise errors.TpmUnavailable("pinutild's PIN prompt is not one of tpm_pin's: "
                                            "not shown")
            return read_pin(prompt)

        fields = {"user": name}
        if self.on_behalf_of is not None:
            fields["on_behalf_of"] = self.on_behalf_of
        client.pin_login(self.policy.service_socket, fields, read_known_prompt, self.budget)


def choose_backend(mode: str, policy: Policy, budget: TpmBudget, policy_path: str | None = None,
                   on_behalf_of: int | None = None):
    """`direct`, `helper`, `daemon`, or for `auto`: the service when its socket exists;
    else direct only when this process owns its environment (not AT_SECURE: sudo/su must
    never feed their caller's TSS2_* variables to libtss2) and may open the TPM; else the
    helper. All spend `budget`, the login's TPM time. `on_behalf_of`: the uid a root
    host acts for (the service applies its rules to it; the other backends, which run
    in or for the host itself, refuse another user's PIN before any TPM command)."""
    if mode not in BACKENDS:
        raise errors.PolicyError(f"backend={mode}: expected one of {', '.join(BACKENDS)}")
    if mode == "daemon" or (mode == "auto" and os.path.exists(policy.service_socket)):
        return DaemonBackend(policy, budget, on_behalf_of)
    # Imported here: a login through the service needs neither (tests/test_import_budget.py).
    from pinutil.pin.local_login import DirectBackend, HelperBackend, tpm_reachable
    from pinutil.setid import running_setid

    setid = running_setid()
    if mode == "direct" and setid and on_behalf_of is None and os.getuid() != 0:
        # A set-uid host written down with backend=direct (su, sudo): the user who ran
        # it chose the account, so it acts for its real uid, as the helper and the
        # service would have it (review 2 G11: `su victim` spent victim's attempts).
        on_behalf_of = os.getuid()
    if mode == "direct" or (mode == "auto" and not setid and tpm_reachable(policy.tcti)):
        return DirectBackend(policy, budget, on_behalf_of)
    return HelperBackend(policy, budget, policy_path, on_behalf_of)
