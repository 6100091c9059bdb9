"""The master key: the TPM-held HMAC key behind every user's keyring token (`key`) and its
recovery copy (`recovery`: BIP39 phrase, sealed file)."""
