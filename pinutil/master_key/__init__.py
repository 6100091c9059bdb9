"""The master key: the TPM-held HMAC key behind every user's keyring token. The login
path (`token`) apart from the admin life cycle (`lifecycle`) and the recovery copy
(`recovery`: BIP39 phrase, sealed file)."""
