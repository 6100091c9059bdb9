"""pinutil: the TPM PIN and master-key core, and the `pinutil` command on top of it.

Never imports `pypam`: the PAM modules adapt this core, not the other way round.
"""
