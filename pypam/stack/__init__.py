"""pypam.stack: read, simulate, explain and check PAM stacks exactly as libpam runs them.

Stdlib only and independent of the rest of pypam's runtime: the login path (the shim and
`pypam.dispatch`) never imports it; the `pypam` admin command (`python -m pypam`) does.

    parser.load_service(...)  -> Stack (libpam's handler lists, with each line's origin)
    simulate.Transaction      -> what pam_authenticate & co. return for given module results
    explain.explain_stage     -> every distinct way a stage can end, in words
    check.check_services      -> findings (anyone gets in, bad jumps, unreachable lines...)

The rules are Linux-PAM 1.5.2's (libpam/pam_handlers.c, pam_dispatch.c, pam_misc.c) plus
Debian's `@include`; where other libpam versions differ, the docs (docs/pypam.md) say so.
"""
