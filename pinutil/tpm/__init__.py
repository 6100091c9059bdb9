"""The TPM layer: knows TPM commands, not PINs or users.

  _tss (built by binding_build.py)  our cffi binding to tpm2-tss, ESAPI and SAPI
  rc.py            return codes -> exceptions (TpmCommandError, errors.TpmUnavailable)
  handles.py       EsysTr / TpmHandle (the two kinds of handle)
  structs.py       TPM2B buffers, NvPublic, our storage primary's template and Name
  context.py       class Tpm: one connection; every command is sent through Tpm.send
  sapi.py          the login path's commands over SAPI (PIN reads, the salt key)
  session_crypto.py  our side of a salted HMAC session (for sapi.py)

One way to send a command: a `Tpm` method or a `sapi` function, both ending in
`Tpm.send` (one error translation); one flush (`Tpm.flush`/`flush_quietly`, typed by
handle kind); return codes only as the binding's constants (`lib.TPM2_RC_*`).
"""

# TPM 2.0 Part 2, 7.4: NV indices defined with owner authorisation. A PIN index is at
# nv_base + uid inside this range. Here, not in a module of the layer: the policy
# (pinutil/pin/policy.py) checks nv_base against it on every login, and a login through
# pinutild loads nothing else of the TPM layer (tests/test_import_budget.py).
OWNER_NV_FIRST = 0x01000000
OWNER_NV_LAST = 0x013FFFFF
