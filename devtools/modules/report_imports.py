"""A pypam module for the import budget (devtools/imports.py): in every hook it writes
the names in sys.modules, in import order, one a line, to `record=FILE`, and returns
PAM_IGNORE. It imports nothing itself, so what it writes is what pypam and the
modules before it on the stack imported in this interpreter.
"""

PAM_IGNORE = 25  # a literal: importing pypam here would hide nothing, but says nothing


def _record(args):
    for arg in args:
        if arg.startswith("record="):
            import sys  # builtin, always loaded: adds nothing to what is recorded

            with open(arg[len("record="):], "w", encoding="utf-8") as f:
                f.write("\n".join(sys.modules) + "\n")
    return PAM_IGNORE


def authenticate(pamh, flags, args):
    return _record(args)


def setcred(pamh, flags, args):
    return _record(args)


def acct_mgmt(pamh, flags, args):
    return _record(args)


def open_session(pamh, flags, args):
    return _record(args)


def close_session(pamh, flags, args):
    return _record(args)


def chauthtok(pamh, flags, args):
    return _record(args)
