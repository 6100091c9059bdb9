"""Per-handle Python data that lives from one PAM call to the next on the same handle.

The state is kept in a process-wide table under a serial number, and only that serial
is stored in the handle with pam_set_data. A serial is never reused in a process, so
a new handle that happens to get a freed handle's address cannot see its predecessor's
data. libpam calls the cleanup at pam_end, which drops the state.
"""
import itertools

from .constants import PAM_NO_MODULE_DATA, PAM_SUCCESS
from .errors import PamError
from .libpam import ffi, libc, pam

_DATA_NAME = b"pypam.state"
_serials = itertools.count(1)
_states: dict[int, dict[str, dict]] = {}


@ffi.callback("void(pam_handle_t *, void *, int)")
def _cleanup(_pamh, data, _error_status):
    # Runs inside pam_end; cffi takes the GIL for us. Never let an exception escape.
    try:
        _states.pop(ffi.cast("unsigned long long *", data)[0], None)
    finally:
        libc.free(data)


def _serial_of(pamh_ptr, create: bool) -> int | None:
    slot = ffi.new("const void **")
    rc = pam.pam_get_data(pamh_ptr, _DATA_NAME, slot)
    if rc == PAM_SUCCESS and slot[0] != ffi.NULL:
        return ffi.cast("unsigned long long *", slot[0])[0]
    if rc != PAM_NO_MODULE_DATA and rc != PAM_SUCCESS:
        raise PamError(rc)
    if not create:
        return None
    raw = libc.malloc(ffi.sizeof("unsigned long long"))
    if raw == ffi.NULL:
        raise MemoryError
    serial = next(_serials)
    ffi.cast("unsigned long long *", raw)[0] = serial
    rc = pam.pam_set_data(pamh_ptr, _DATA_NAME, raw, _cleanup)
    if rc != PAM_SUCCESS:
        libc.free(raw)
        raise PamError(rc)
    _states[serial] = {}
    return serial


def module_data(pamh_ptr, module: str) -> dict:
    """The data dict private to `module` on this handle, created on first use."""
    serial = _serial_of(pamh_ptr, create=True)
    return _states.setdefault(serial, {}).setdefault(module, {})


def live_states() -> int:
    """How many handles currently hold pypam data (for leak tests)."""
    return len(_states)
