"""Every string item: set, read back, unset (None), read back; report as JSON.

PAM_SERVICE is only read, then set to a new value and back: changing it makes libpam
reload the stack, and unsetting it must be refused (libpam would crash).
"""
import json

import pypam

SETTABLE = ("user", "user_prompt", "tty", "rhost", "ruser", "authtok",
            "oldauthtok", "xdisplay", "authtok_type")


def authenticate(pamh, flags, args):
    seen = {"before": {name: getattr(pamh, name) for name in (*SETTABLE, "service")}}
    for name in SETTABLE:
        value = f"v-{name}-\u00e9\udcff"  # non-ASCII, and one byte that is not UTF-8
        setattr(pamh, name, value)
        got = getattr(pamh, name)
        setattr(pamh, name, None)
        seen[name] = [got == value, getattr(pamh, name)]
    service = pamh.service
    pamh.service = "Other-Service"
    seen["service"] = pamh.service  # libpam lowercases it
    try:
        pamh.service = None
        seen["service_none"] = "accepted"
    except pypam.PamError as e:
        seen["service_none"] = e.code
    pamh.service = service
    pamh.xauthdata = ("MIT-MAGIC-COOKIE-1", b"\x00\x01\xffcookie")
    name, data = pamh.xauthdata
    seen["xauthdata"] = [name, data.hex()]
    # Leave values for the application to read back through pam_get_item.
    for name in ("user", "tty", "rhost", "ruser", "user_prompt"):
        setattr(pamh, name, f"final-{name}")
    pamh.info("report:" + json.dumps(seen))
    return pypam.PAM_SUCCESS
