"""The TPM layer: knows TPM commands, not PINs or users.

  _tss (built by binding_build.py)  our cffi binding to tpm2-tss, ESAPI and SAPI
  rc.py            return codes -> exceptions (TpmCommandError, errors.TpmUnavailable)
  handles.py       EsysTr / TpmHandle (the two kinds of handle), the owner NV range
  structs.py       TPM2B buffers, NvPublic, our storage primary's template and Name
  context.py       class Tpm: one connection; every command is sent through Tpm.send
  sapi.py          the login path's commands over SAPI (PIN reads, the salt key)
  session_crypto.py  our side of a salted HMAC session (for sapi.py)

One way to send a command: a `Tpm` method or a `sapi` function, both ending in
`Tpm.send` (one error translation); one flush (`Tpm.flush`/`flush_quietly`, typed by
handle kind); return codes only as the binding's constants (`lib.TPM2_RC_*`).
"""
