"""The two kinds of handle the TPM layer hands out, and the TPM's owner NV range.

An ESYS_TR (`EsysTr`) is a number ESAPI made up for an object it tracks; a TPM handle
(`TpmHandle`) is the TPM's own number (what SAPI commands take). Both are ints, and
flushing one as the other flushes nothing or the wrong object, so `Tpm.flush` and
`Tpm.flush_quietly` accept only these types and refuse a bare int (TypeError). Every
method that returns something to flush returns one of them.

No imports. The owner NV range lives in the package (pinutil/tpm/__init__.py): the
policy checks nv_base against it on every login, and loads only that.
"""


class EsysTr(int):
    """An ESYS_TR of the `Tpm`'s ESAPI context; gone when the context is closed."""

    __slots__ = ()


class TpmHandle(int):
    """A TPM handle (transient object, session, persistent object or NV index)."""

    __slots__ = ()

