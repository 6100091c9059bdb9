"""The TPM layer: our cffi binding to tpm2-tss (`_tss`, built by binding_build.py), one
ESYS context per use (`context.Tpm`), the login path's SAPI commands (`sapi`) and our
side of a salted session (`session_crypto`). Knows TPM commands, not PINs or users."""
