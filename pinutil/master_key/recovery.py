"""The master key's recovery copy: a BIP39 phrase and the sealed recovery file.

The recovery file is pinpam v0.0.5's format, so a file written by pinpam imports here
and gives the same tokens:

    {"version": 1, "created_unix_ms": N, "salt_b64": ..., "nonce_b64": ...,
     "ciphertext_b64": ...}

standard base64 with padding, a 16-byte salt, a 12-byte nonce, and the ciphertext is
AES-256-GCM (no associated data) of the 32-byte secret under the key
Argon2id(v0x13, 32768 KiB, 3 passes, 1 lane, 32 bytes) of the phrase's UTF-8 bytes
(words joined by single spaces) with that salt.

The phrase is a 24-word BIP39 English mnemonic. `init` draws it from its own random
entropy (not from the secret), so the file alone and the phrase alone are both
useless: recovery needs the two together. Any valid 24-word phrase is accepted on
import, so pinpam's phrases work whatever entropy they came from.

`cryptography` is imported inside the functions that need it (seal, unseal): the
status command and the tests read files without paying for it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import stat
import time
from functools import lru_cache
from pathlib import Path

from pinutil import securefile
from pinutil.errors import MasterKeyError

SECRET_SIZE = 32
SALT_SIZE = 16
NONCE_SIZE = 12
FORMAT_VERSION = 1
# Argon2id parameters fixed by the file format (pinpam v0.0.5); version 0x13 is the
# only one `cryptography` implements (argon2-cffi is told it explicitly).
ARGON2_MEMORY_KIB = 32768
ARGON2_PASSES = 3
ARGON2_LANES = 1
# A genuine file is ~200 bytes; the cap keeps a hostile file from costing memory.
MAX_FILE_SIZE = 64 * 1024

PHRASE_WORDS = 24
_WORDLIST_PATH = Path(__file__).with_name("bip39_english.txt")
# SHA-256 of the official BIP39 English list (bitcoin/bips, bip-0039/english.txt).
WORDLIST_SHA256 = "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda"

_FIELDS = ("version", "created_unix_ms", "salt_b64", "nonce_b64", "ciphertext_b64")


# --- BIP39 -------------------------------------------------------------------------

@lru_cache(maxsize=1)
def wordlist() -> tuple[str, ...]:
    """The 2048 BIP39 English words, checked against the list's well-known hash."""
    raw = _WORDLIST_PATH.read_bytes()
    if hashlib.sha256(raw).hexdigest() != WORDLIST_SHA256:
        raise MasterKeyError(f"{_WORDLIST_PATH} is not the BIP39 English word list")
    words = tuple(raw.decode("ascii").split())
    if len(words) != 2048:
        raise MasterKeyError(f"{_WORDLIST_PATH} does not hold 2048 words")
    return words


@lru_cache(maxsize=1)
def _word_index() -> dict[str, int]:
    return {word: i for i, word in enumerate(wordlist())}


def phrase_from_entropy(entropy: bytes) -> str:
    """The 24-word phrase for 32 bytes of entropy (BIP39: entropy || first 8 bits of
    its SHA-256, cut into 11-bit word indices)."""
    if len(entropy) != SECRET_SIZE:
        raise MasterKeyError(f"a recovery phrase needs {SECRET_SIZE} bytes of entropy")
    checksum = hashlib.sha256(entropy).digest()[0]
    bits = (int.from_bytes(entropy, "big") << 8) | checksum
    words = wordlist()
    indices = [(bits >> (11 * (PHRASE_WORDS - 1 - i))) & 0x7FF for i in range(PHRASE_WORDS)]
    return " ".join(words[i] for i in indices)


def entropy_from_phrase(phrase: str) -> bytes:
    """The 32 bytes a 24-word phrase encodes; MasterKeyError names the first unknown
    word by position (never the word) or reports a bad checksum (a typo)."""
    words = phrase.split()
    if len(words) != PHRASE_WORDS:
        raise MasterKeyError(
            f"the recovery phrase has {len(words)} words, expected {PHRASE_WORDS}")
    index = _word_index()
    bits = 0
    for position, word in enumerate(words, start=1):
        value = index.get(word.lower())
        if value is None:
            raise MasterKeyError(
                f"word {position} of the recovery phrase is not a BIP39 English word")
        bits = (bits << 11) | value
    entropy = (bits >> 8).to_bytes(SECRET_SIZE, "big")
    if hashlib.sha256(entropy).digest()[0] != bits & 0xFF:
        raise MasterKeyError(
            "the recovery phrase's checksum does not match: a word is mistyped")
    return entropy


def normalize_phrase(phrase: str) -> str:
    """The canonical form the file key is derived from (lowercase words joined by
    single spaces), after checking the words and the checksum."""
    entropy_from_phrase(phrase)
    return " ".join(word.lower() for word in phrase.split())


def new_phrase() -> str:
    """A fresh random 24-word phrase."""
    return phrase_from_entropy(secrets.token_bytes(SECRET_SIZE))


# --- sealing -----------------------------------------------------------------------

def _argon2id_cryptography(secret: bytes, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    kdf = Argon2id(salt=salt, length=32, iterations=ARGON2_PASSES, lanes=ARGON2_LANES,
                   memory_cost=ARGON2_MEMORY_KIB)
    return kdf.derive(secret)


def _argon2id_argon2_cffi(secret: bytes, salt: bytes) -> bytes:
    from argon2.low_level import Type, hash_secret_raw

    return hash_secret_raw(secret, salt, time_cost=ARGON2_PASSES,
                           memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_LANES,
                           hash_len=32, type=Type.ID, version=0x13)


def _file_key(phrase: str, salt: bytes) -> bytes:
    # Argon2id came in cryptography 44; Debian 12 and 13 ship 38 and 43, so the
    # Debian package uses python3-argon2 (argon2-cffi) instead. Same function, same key.
    try:
        import cryptography.hazmat.primitives.kdf.argon2  # noqa: F401
    except ImportError:
        return _argon2id_argon2_cffi(phrase.encode("utf-8"), salt)
    return _argon2id_cryptography(phrase.encode("utf-8"), salt)


def seal(secret: bytes, phrase: str) -> bytes:
    """The recovery file's bytes for `secret` under `phrase`."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(secret) != SECRET_SIZE:
        raise MasterKeyError(f"the master key must be {SECRET_SIZE} bytes")
    phrase = normalize_phrase(phrase)
    salt = secrets.token_bytes(SALT_SIZE)
    nonce = secrets.token_bytes(NONCE_SIZE)
    ciphertext = AESGCM(_file_key(phrase, salt)).encrypt(nonce, secret, None)
    document = {
        "version": FORMAT_VERSION,
        "created_unix_ms": time.time_ns() // 1_000_000,
        "salt_b64": base64.b64encode(salt).decode("ascii"),
        "nonce_b64": base64.b64encode(nonce).decode("ascii"),
        "ciphertext_b64": base64.b64encode(ciphertext).decode("ascii"),
    }
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise MasterKeyError("the recovery file repeats a field")
    return document


def _reject_constant(name: str) -> object:
    raise MasterKeyError(f"the recovery file holds a non-standard number ({name})")


def _field_bytes(document: dict, name: str, size: int) -> bytes:
    value = document[name]
    if not isinstance(value, str):
        raise MasterKeyError(f"the recovery file's {name} is not a string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MasterKeyError(f"the recovery file's {name} is not valid base64") from None
    if len(raw) != size:
        raise MasterKeyError(
            f"the recovery file's {name} is {len(raw)} bytes, expected {size}")
    return raw


def parse_sealed(data: bytes) -> dict:
    """The recovery file's fields, checked; raises MasterKeyError for anything that is
    not a version-1 file (truncated, garbage, wrong version, wrong sizes)."""
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicates,
                              parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        raise MasterKeyError(
            "the recovery file is not valid JSON (truncated or corrupted)") from None
    if not isinstance(document, dict):
        raise MasterKeyError("the recovery file is not a JSON object")
    missing = [name for name in _FIELDS if name not in document]
    if missing:
        raise MasterKeyError(f"the recovery file lacks {', '.join(missing)}")
    version = document["version"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise MasterKeyError(
            f"the recovery file has version {version!r}; only {FORMAT_VERSION} is known")
    created = document["created_unix_ms"]
    if type(created) is not int or created < 0:
        raise MasterKeyError("the recovery file's created_unix_ms is not a timestamp")
    return {
        "version": version,
        "created_unix_ms": created,
        "salt": _field_bytes(document, "salt_b64", SALT_SIZE),
        "nonce": _field_bytes(document, "nonce_b64", NONCE_SIZE),
        # GCM appends a 16-byte tag to the 32-byte secret.
        "ciphertext": _field_bytes(document, "ciphertext_b64", SECRET_SIZE + 16),
    }


def unseal(data: bytes, phrase: str) -> bytes:
    """The 32-byte secret in a recovery file; MasterKeyError if the file is unusable or
    the phrase is not the one it was sealed with."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    phrase = normalize_phrase(phrase)
    fields = parse_sealed(data)
    key = _file_key(phrase, fields["salt"])
    try:
        return AESGCM(key).decrypt(fields["nonce"], fields["ciphertext"], None)
    except InvalidTag:
        # GCM cannot tell a wrong phrase from an altered file; both mean "no".
        raise MasterKeyError(
            "the recovery phrase does not open this recovery file "
            "(wrong phrase, or the file was altered)") from None


# --- the file on disk --------------------------------------------------------------

def _open_directory(directory: Path, create: bool) -> int:
    """An fd on `directory`, which must be a real directory (not a symlink), owned by
    us and writable by no one else: whoever can write there can swap the file."""
    if create and not os.path.lexists(directory):
        os.makedirs(directory.parent, mode=0o755, exist_ok=True)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
    try:
        fd = securefile.open_directory(str(directory), owners=(os.geteuid(),),
                                       forbidden=securefile.GROUP_OR_OTHERS_WRITE)
    except securefile.Refused as e:
        raise MasterKeyError(f"{directory} is not a usable directory: it {e}") from None
    if fd is None:
        raise MasterKeyError(f"{directory} does not exist")
    return fd


def write_sealed_file(path: str | os.PathLike, data: bytes) -> None:
    """Write the recovery file atomically (temp file, fsync, rename) with mode 0600,
    creating its directory with mode 0700 if missing; never follows a symlink."""
    path = Path(os.path.abspath(path))
    dir_fd = _open_directory(path.parent, create=True)
    try:
        try:
            if stat.S_ISLNK(os.lstat(path.name, dir_fd=dir_fd).st_mode):
                raise MasterKeyError(f"{path} is a symbolic link; refusing to replace it")
        except FileNotFoundError:
            pass
        securefile.replace_file(dir_fd, path.name, data, 0o600)
    finally:
        os.close(dir_fd)


def read_sealed_file(path: str | os.PathLike) -> bytes:
    """The recovery file's bytes: opened without following a symlink, and only if it
    is a regular file owned by us, writable by no one else, and of sane size."""
    path = Path(os.path.abspath(path))
    try:
        data = securefile.read_file(str(path), owners=(os.geteuid(),),
                                    forbidden=securefile.GROUP_OR_OTHERS_WRITE,
                                    max_bytes=MAX_FILE_SIZE)
    except securefile.Refused as e:
        raise MasterKeyError(f"cannot use the recovery file {path}: it {e}") from None
    if data is None:
        raise MasterKeyError(f"no recovery file at {path}")
    return data


def remove_sealed_file(path: str | os.PathLike) -> bool:
    """Delete the recovery file (a symlink there is removed, never followed); True if
    there was one."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
