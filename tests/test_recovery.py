"""The recovery phrase (BIP39) and the sealed recovery file (pinpam's format)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from pinutil.errors import MasterKeyError
from pinutil.master_key import recovery

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Vectors from the BIP39 reference (trezor/python-mnemonic vectors.json), 256-bit.
BIP39_VECTORS = [
    ("00" * 32, " ".join(["abandon"] * 23 + ["art"])),
    ("7f" * 32, ("legal winner thank year wave sausage worth useful legal winner thank "
                 "year wave sausage worth useful legal winner thank year wave sausage "
                 "worth title")),
    ("80" * 32, ("letter advice cage absurd amount doctor acoustic avoid letter advice "
                 "cage absurd amount doctor acoustic avoid letter advice cage absurd "
                 "amount doctor acoustic bless")),
    ("ff" * 32, " ".join(["zoo"] * 23 + ["vote"])),
]


def independent_seal(secret: bytes, phrase: str, version: int = 1) -> bytes:
    """The file format written from its description, without pinutil.master_key.recovery."""
    salt, nonce = os.urandom(16), os.urandom(12)
    key = Argon2id(salt=salt, length=32, iterations=3, lanes=1,
                   memory_cost=32768).derive(phrase.encode())
    doc = {
        "version": version,
        "created_unix_ms": 1700000000000,
        "salt_b64": base64.b64encode(salt).decode(),
        "nonce_b64": base64.b64encode(nonce).decode(),
        "ciphertext_b64": base64.b64encode(AESGCM(key).encrypt(nonce, secret, None)).decode(),
    }
    return json.dumps(doc, indent=2).encode()


@pytest.fixture(scope="module")
def phrase() -> str:
    return recovery.new_phrase()


@pytest.fixture(scope="module")
def sealed(phrase):
    secret = secrets.token_bytes(32)
    return secret, recovery.seal(secret, phrase)


def test_wordlist_is_the_official_bip39_english_list():
    with open(os.path.join(ROOT, "pinutil", "master_key", "bip39_english.txt"), "rb") as f:
        raw = f.read()
    assert hashlib.sha256(raw).hexdigest() == (
        "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda")
    assert len(recovery.wordlist()) == 2048


@pytest.mark.parametrize("entropy_hex,words", BIP39_VECTORS)
def test_bip39_known_vectors(entropy_hex, words):
    entropy = bytes.fromhex(entropy_hex)
    assert recovery.phrase_from_entropy(entropy) == words
    assert recovery.entropy_from_phrase(words) == entropy


def test_bip39_round_trip_random():
    for _ in range(50):
        entropy = secrets.token_bytes(32)
        assert recovery.entropy_from_phrase(recovery.phrase_from_entropy(entropy)) == entropy


def test_phrase_typo_is_a_clear_error():
    words = BIP39_VECTORS[1][1].split()
    unknown = words.copy()
    unknown[4] = "wavy"
    with pytest.raises(MasterKeyError, match="word 5 .* not a BIP39") as e:
        recovery.entropy_from_phrase(" ".join(unknown))
    assert "wavy" not in str(e.value)
    swapped = words.copy()
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(MasterKeyError, match="checksum"):
        recovery.entropy_from_phrase(" ".join(swapped))
    with pytest.raises(MasterKeyError, match="23 words"):
        recovery.entropy_from_phrase(" ".join(words[:23]))


def test_phrase_is_normalised_before_key_derivation(phrase, sealed):
    secret, data = sealed
    messy = "  " + "\n".join(word.upper() for word in phrase.split()) + " \t"
    assert recovery.unseal(data, messy) == secret


def test_round_trip_and_format(phrase, sealed):
    secret, data = sealed
    assert recovery.unseal(data, phrase) == secret
    doc = json.loads(data)
    assert list(doc) == ["version", "created_unix_ms", "salt_b64", "nonce_b64",
                         "ciphertext_b64"]
    assert doc["version"] == 1 and isinstance(doc["created_unix_ms"], int)
    assert len(base64.b64decode(doc["salt_b64"], validate=True)) == 16
    assert len(base64.b64decode(doc["nonce_b64"], validate=True)) == 12
    assert len(base64.b64decode(doc["ciphertext_b64"], validate=True)) == 48
    assert secret.hex() not in data.decode()


def test_our_file_opens_with_an_independent_reader(phrase, sealed):
    secret, data = sealed
    doc = json.loads(data)
    key = Argon2id(salt=base64.b64decode(doc["salt_b64"]), length=32, iterations=3,
                   lanes=1, memory_cost=32768).derive(phrase.encode())
    plain = AESGCM(key).decrypt(base64.b64decode(doc["nonce_b64"]),
                                base64.b64decode(doc["ciphertext_b64"]), None)
    assert plain == secret


def test_independently_sealed_file_unseals(phrase):
    secret = secrets.token_bytes(32)
    assert recovery.unseal(independent_seal(secret, phrase), phrase) == secret


def test_wrong_phrase_is_a_clear_error(sealed):
    _, data = sealed
    with pytest.raises(MasterKeyError, match="does not open this recovery file"):
        recovery.unseal(data, recovery.new_phrase())


def test_tampered_ciphertext_is_a_clear_error(phrase, sealed):
    _, data = sealed
    doc = json.loads(data)
    raw = bytearray(base64.b64decode(doc["ciphertext_b64"]))
    raw[3] ^= 1
    doc["ciphertext_b64"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(MasterKeyError, match="altered"):
        recovery.unseal(json.dumps(doc).encode(), phrase)


@pytest.mark.parametrize("cut", [0, 1, 20, -30, -1])
def test_truncated_file_is_a_clear_error(phrase, sealed, cut):
    _, data = sealed
    with pytest.raises(MasterKeyError, match="not valid JSON"):
        recovery.unseal(data[:cut], phrase)


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00", b"[]", b"null", b"42",
                                     b'{"version": NaN}'])
def test_garbage_is_a_clear_error(phrase, garbage):
    with pytest.raises(MasterKeyError):
        recovery.unseal(garbage, phrase)


@pytest.mark.parametrize("version", [0, 2, "1", True, 1.0, None])
def test_wrong_version_is_a_clear_error(phrase, version):
    data = independent_seal(b"\x01" * 32, phrase, version=version)
    with pytest.raises(MasterKeyError, match="version"):
        recovery.unseal(data, phrase)


@pytest.mark.parametrize("field,value,message", [
    ("salt_b64", "not base64!", "not valid base64"),
    ("salt_b64", "AAAA", "salt_b64 is 3 bytes, expected 16"),
    ("nonce_b64", base64.b64encode(b"\0" * 16).decode(), "nonce_b64 is 16 bytes"),
    ("ciphertext_b64", base64.b64encode(b"\0" * 40).decode(), "ciphertext_b64 is 40"),
    ("ciphertext_b64", 17, "not a string"),
    ("salt_b64", "AAAAAAAAAAAAAAAAAAAAAA", "not valid base64"),  # missing padding
])
def test_bad_fields_are_clear_errors(phrase, field, value, message):
    doc = json.loads(independent_seal(b"\x01" * 32, phrase))
    doc[field] = value
    with pytest.raises(MasterKeyError, match=message):
        recovery.unseal(json.dumps(doc).encode(), phrase)


def test_missing_and_duplicate_fields_are_clear_errors(phrase):
    doc = json.loads(independent_seal(b"\x01" * 32, phrase))
    del doc["nonce_b64"]
    with pytest.raises(MasterKeyError, match="lacks nonce_b64"):
        recovery.unseal(json.dumps(doc).encode(), phrase)
    data = independent_seal(b"\x01" * 32, phrase).replace(b'"version": 1',
                                                          b'"version": 1, "version": 1')
    with pytest.raises(MasterKeyError, match="repeats"):
        recovery.unseal(data, phrase)


def test_seal_refuses_a_wrong_size_secret(phrase):
    with pytest.raises(MasterKeyError):
        recovery.seal(b"short", phrase)


# --- the file on disk --------------------------------------------------------------

def test_write_creates_private_directory_and_file(tmp_path):
    path = tmp_path / "pinpam" / "sealed_master_key"
    recovery.write_sealed_file(path, b"{}")
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert recovery.read_sealed_file(path) == b"{}"
    recovery.write_sealed_file(path, b"{1}")  # atomic replace
    assert recovery.read_sealed_file(path) == b"{1}"
    assert sorted(os.listdir(path.parent)) == ["sealed_master_key"]  # no temp left


def test_write_refuses_to_follow_symlinks(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(MasterKeyError, match="symbolic link"):
        recovery.write_sealed_file(link, b"{}")
    assert target.read_bytes() == b"keep"
    real_dir = tmp_path / "real"
    real_dir.mkdir(mode=0o700)
    (tmp_path / "dirlink").symlink_to(real_dir)
    with pytest.raises(MasterKeyError, match="not a usable directory"):
        recovery.write_sealed_file(tmp_path / "dirlink" / "f", b"{}")
    assert os.listdir(real_dir) == []


def test_write_refuses_a_directory_others_can_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(MasterKeyError, match="writable by group or others"):
        recovery.write_sealed_file(shared / "f", b"{}")


def test_read_refuses_symlink_foreign_owner_loose_mode_and_huge_files(tmp_path):
    good = tmp_path / "good"
    recovery.write_sealed_file(good, b"{}")
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(MasterKeyError, match="symbolic link"):
        recovery.read_sealed_file(link)
    os.chmod(good, 0o622)
    with pytest.raises(MasterKeyError, match="writable by group or others"):
        recovery.read_sealed_file(good)
    os.chmod(good, 0o600)
    if os.geteuid() == 0:
        os.chown(good, 65534, 65534)
        with pytest.raises(MasterKeyError, match="must be owned by root"):
            recovery.read_sealed_file(good)
        os.chown(good, 0, 0)
    huge = tmp_path / "huge"
    recovery.write_sealed_file(huge, b" " * (recovery.MAX_FILE_SIZE + 1))
    with pytest.raises(MasterKeyError, match="larger than"):
        recovery.read_sealed_file(huge)
    with pytest.raises(MasterKeyError, match="not a regular file"):
        recovery.read_sealed_file(tmp_path)
    with pytest.raises(MasterKeyError, match="no recovery file"):
        recovery.read_sealed_file(tmp_path / "absent")


def test_importing_recovery_does_not_import_cryptography():
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); import pinutil.master_key.recovery; "
            "print(any(m.startswith('cryptography') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "False"


# Debian's cryptography (38 in Debian 12, 43 in 13) has no Argon2id: the package then
# derives the file key with python3-argon2 (argon2-cffi). Both must give the same key.
_CRYPTOGRAPHY_ARGON2 = "cryptography.hazmat.primitives.kdf.argon2"


@pytest.mark.parametrize("secret, salt", [
    (b"abandon " * 23 + b"art", bytes(16)),
    (b"", bytes(range(16))),
    ("z\u00fcrich \u20ac".encode(), b"\xff" * 16),
    (secrets.token_bytes(300), secrets.token_bytes(16)),
], ids=["phrase", "empty", "utf8", "random"])
def test_argon2_cffi_backend_gives_cryptographys_key(secret, salt):
    expected = Argon2id(salt=salt, length=32, iterations=3, lanes=1,
                        memory_cost=32768).derive(secret)
    assert recovery._argon2id_argon2_cffi(secret, salt) == expected


def test_without_cryptographys_argon2id_files_still_open_and_seal(monkeypatch, phrase):
    used = []
    real = recovery._argon2id_argon2_cffi
    monkeypatch.setattr(recovery, "_argon2id_argon2_cffi",
                        lambda *a: used.append(1) or real(*a))
    monkeypatch.setitem(sys.modules, _CRYPTOGRAPHY_ARGON2, None)  # import fails
    secret = secrets.token_bytes(32)
    assert recovery.unseal(independent_seal(secret, phrase), phrase) == secret
    ours = recovery.seal(secret, phrase)
    monkeypatch.delitem(sys.modules, _CRYPTOGRAPHY_ARGON2)
    assert recovery.unseal(ours, phrase) == secret  # opened with cryptography again
    assert len(used) == 2
    with pytest.raises(MasterKeyError, match="does not open"):
        monkeypatch.setitem(sys.modules, _CRYPTOGRAPHY_ARGON2, None)
        recovery.unseal(ours, recovery.new_phrase())
