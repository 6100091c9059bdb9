"""The PIN: a per-user PIN_FAIL NV index (`index`), the policy, the salt-key record, the
enrolment records and the enrolment proof, and the PAM side of a PIN login (`login`)."""
