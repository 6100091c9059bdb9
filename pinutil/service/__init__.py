"""pinutild: the one process that opens the TPM; PAM hosts and pinutil ask it over a
unix socket (docs/pinutild.md). `protocol` is the wire format, `client` the caller's
side (stdlib only: it runs in every PAM host), `server` the event loop and its single
TPM worker (`conversation` its prompts, `connection` its per-client state), `verbs` what each request does with pinutil's core, `peer` who is asking,
`requester` whom a root PAM host acts for (tpm_pin's side of `on_behalf_of`).
"""
