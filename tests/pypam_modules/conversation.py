"""The conversation API; args[0] picks the variant, results go to items and reports.

Answers are echoed back only because this is a test module.
"""
import json

import pypam
from pypam import Message


def authenticate(pamh, flags, args):
    mode = args[0]
    if mode == "single":
        r = pamh.conversation(Message(pypam.PAM_PROMPT_ECHO_ON, "single?"))
        pamh.info("report:" + json.dumps({"type": type(r).__name__, "resp": r.resp,
                                          "retcode": r.retcode}))
    elif mode == "list":
        rs = pamh.conversation([
            Message(pypam.PAM_PROMPT_ECHO_OFF, "first?"),
            Message(pypam.PAM_TEXT_INFO, "between"),
            Message(pypam.PAM_PROMPT_ECHO_ON, "second?"),
            Message(pypam.PAM_ERROR_MSG, "careful"),
        ])
        pamh.info("report:" + json.dumps([[r.resp, r.retcode] for r in rs]))
    elif mode == "prompt":
        pamh.info("report:" + json.dumps([pamh.prompt("hidden?"),
                                          pamh.prompt("shown?", echo=True)]))
    elif mode == "info_error":
        pamh.info("an info")
        pamh.error("an error")
    elif mode == "raw_null":
        # conversation() itself: a NULL answer comes back as Response(None).
        r = pamh.conversation(Message(pypam.PAM_PROMPT_ECHO_OFF, "nothing?"))
        pamh.ruser = "resp-is-none" if r.resp is None else "resp-is-set"
        return pypam.PAM_AUTH_ERR
    elif mode == "get_user":
        pamh.ruser = "got-" + pamh.get_user(args[1] if len(args) > 1 else None)
    elif mode == "get_authtok":
        token = pamh.get_authtok(args[1] if len(args) > 1 else None)
        pamh.ruser = "tok-" + token
    elif mode == "response_repr":
        r = pamh.conversation(Message(pypam.PAM_PROMPT_ECHO_OFF, "secret?"))
        pamh.info("report:" + json.dumps({"repr": repr(r), "str": str(r)}))
    else:
        raise ValueError(mode)
    return pypam.PAM_SUCCESS
