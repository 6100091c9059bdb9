"""Issue 9, finding 2: an active man in the middle on the TPM transport.

Whoever can alter TPM responses (a bus interposer; the socket of a swtpm set-up) sits
in `tests/support/tpm_proxy.py` between the real PAM host (build/pamhost, tpm_pin,
both backends) and a real swtpm. Against it, no wrong PIN may ever log in, and the
typed PIN must not be recoverable from what the proxy saw:

- `KeySubstitution`: the proxy puts its own P-256 key in place of our salt key
  (ReadPublic of 0x81000082, or CreatePrimary when it hides the persistent key),
  answers StartAuthSession itself, brute-forces the typed PIN from the NV_Read HMAC,
  and forges a "PIN correct" answer with a valid response HMAC. On the code before
  the salt key was pinned this logged in with every PIN while the TPM counted nothing;
  now the check must refuse the key before any PIN-dependent byte is sent.
- replays of a genuine "PIN correct" answer recorded in an earlier login;
- forged NV_Read answers (success without a valid HMAC, success without sessions);
- the same key substitution against `pinutil owner protect`, whose session carries
  the new owner and lockout passwords (review F15).

The attacker's crypto is written here from the TPM 2.0 Library (Part 1, 19.6 and 21)
with the stdlib and `cryptography`, not with pinutil's session code.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.support.pamhost import PAM_SUCCESS, result_code, result_name
from tests.support.tpm_proxy import (
    CC_CREATE_PRIMARY,
    CC_FLUSH_CONTEXT,
    CC_NV_READ,
    CC_NV_READ_PUBLIC,
    CC_READ_PUBLIC,
    CC_START_AUTH_SESSION,
    HEADER,
    TAG_NO_SESSIONS,
    TAG_SESSIONS,
    Reader,
    TpmProxy,
    forward_everything,
    parse_command,
    response_code,
    tpm2b,
    with_header,
)

PIN = "2580"
WRONG = "1111"
SALT_KEY_HANDLE = 0x81000082
RC_HANDLE_1 = 0x18B
BACKENDS = ("direct", "helper")
ECC_POINT_BYTES = 2 + 32 + 2 + 32  # TPMS_ECC_POINT: x and y as TPM2Bs, last in TPMT_PUBLIC


# ---- the attacker's crypto (TPM 2.0 Library, Part 1) ----------------------------------
def kdfa(key: bytes, label: bytes, u: bytes, v: bytes, bits: int) -> bytes:
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += hmac.new(key, struct.pack(">I", counter) + label + b"\0" + u + v
                        + struct.pack(">I", bits), hashlib.sha256).digest()
        counter += 1
    return out[:bits // 8]


def kdfe(z: bytes, label: bytes, u: bytes, v: bytes) -> bytes:
    return hashlib.sha256(struct.pack(">I", 1) + z + label + b"\0" + u + v).digest()


def aes_cfb_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128 in CFB mode (full blocks of feedback), from the block cipher."""
    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # CFB from its core
    out, feedback = b"", iv
    for at in range(0, len(data), 16):
        chunk = data[at:at + 16]
        out += bytes(a ^ b for a, b in zip(chunk, block.update(feedback)))
        feedback = chunk
    return out


def name_of(public_area: bytes) -> bytes:
    return b"\x00\x0b" + hashlib.sha256(public_area).digest()


class Session:
    __slots__ = ("key", "nonce_caller", "nonce_tpm")

    def __init__(self, key: bytes, nonce_caller: bytes, nonce_tpm: bytes) -> None:
        self.key, self.nonce_caller, self.nonce_tpm = key, nonce_caller, nonce_tpm


class KeySubstitution:
    """The active attack of finding 2, as a TpmProxy intercept.

    `hide_persistent`: answer ReadPublic(0x81000082) with TPM_RC_HANDLE, so the check
    falls back to CreatePrimary, whose answer is substituted instead.
    """

    def __init__(self, hide_persistent: bool = False) -> None:
        self.hide_persistent = hide_persistent
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        self.x = numbers.x.to_bytes(32, "big")
        self.point = tpm2b(self.x) + tpm2b(numbers.y.to_bytes(32, "big"))
        self.substituted: set[int] = set()      # TPM handles that now mean our key
        self.index_names: dict[int, bytes] = {}  # NV handle -> Name, from NV_ReadPublic
        self.sessions: dict[int, Session] = {}
        self.salted_to_us: list[bytes] = []     # StartAuthSession commands for our key
        self.pin_commands: list[bytes] = []     # PIN-dependent commands we received
        self.recovered: list[str] = []          # typed PINs brute-forced from them
        self.forged_success = 0
        self.area = b""                         # the last public area we made up

    def __call__(self, command: bytes, forward) -> bytes | None:
        code = HEADER.unpack_from(command)[2]
        if code == CC_NV_READ_PUBLIC:
            return self._learn_index_name(command, forward(command))
        if code == CC_READ_PUBLIC:
            (handle,), _, _ = parse_command(command, 1)
            if handle == SALT_KEY_HANDLE and self.hide_persistent:
                return with_header(TAG_NO_SESSIONS, RC_HANDLE_1, b"")
            response = forward(command)
            if handle in (SALT_KEY_HANDLE, *self.substituted) and response_code(response) == 0:
                self.substituted.add(handle)  # and a primary it made up, read back
                return self._substitute_read_public(response)
            return response
        if code == CC_CREATE_PRIMARY:
            response = forward(command)
            if response_code(response) == 0:
                self.substituted.add(struct.unpack_from(">I", response, HEADER.size)[0])
                return self._substitute_create_primary(response)
            return response
        if code == CC_START_AUTH_SESSION:
            (tpm_key, _), _, params = parse_command(command, 2)
            if tpm_key in self.substituted:
                return self._start_session(command, params)
            return forward(command)
        if code == CC_NV_READ:
            (_, index), auths, params = parse_command(command, 2)
            if auths and auths[0].handle in self.sessions:
                return self._answer_nv_read(command, index, auths[0], params)
            return forward(command)
        if code == CC_FLUSH_CONTEXT:
            handle = struct.unpack_from(">I", command, HEADER.size)[0]
            if handle in self.sessions:
                return with_header(TAG_NO_SESSIONS, 0, b"")
        return forward(command)

    # -- substituting the key ----------------------------------------------------------
    def _learn_index_name(self, command: bytes, response: bytes) -> bytes:
        if response_code(response) == 0:
            (index,), _, _ = parse_command(command, 1)
            r = Reader(response)
            r.tpm2b()  # TPM2B_NV_PUBLIC
            self.index_names[index] = r.tpm2b()
        return response

    def _swap_point(self, response: bytes, public_at: int) -> tuple[bytes, bytes]:
        """The response with our point in the TPM2B_PUBLIC at `public_at`, and the
        new public area."""
        size = struct.unpack_from(">H", response, public_at)[0]
        start, end = public_at + 2, public_at + 2 + size
        area = response[start:end - ECC_POINT_BYTES] + self.point
        self.area = area
        return response[:start] + area + response[end:], area

    def _substitute_read_public(self, response: bytes) -> bytes:
        response, area = self._swap_point(response, HEADER.size)
        name_at = HEADER.size + 2 + len(area)
        return response[:name_at] + tpm2b(name_of(area)) + response[name_at + 2 + 34:]

    def _substitute_create_primary(self, response: bytes) -> bytes:
        public_at = HEADER.size + 8  # objectHandle, parameterSize
        response, area = self._swap_point(response, public_at)
        r = Reader(response, public_at)
        r.tpm2b()          # outPublic
        r.tpm2b()          # creationData
        r.tpm2b()          # creationHash
        r.raw(6)           # creationTicket: tag, hierarchy
        r.tpm2b()          # its digest
        name_at = r.at
        return response[:name_at] + tpm2b(name_of(area)) + response[name_at + 2 + 34:]

    # -- answering in the TPM's place -------------------------------------------------------
    def salt_for(self, encrypted_salt: bytes) -> bytes:
        """ECDH of the client's ephemeral point with our private key (Part 1, C.6.1)."""
        r = Reader(encrypted_salt, 0)
        qx, qy = r.tpm2b(), r.tpm2b()
        peer = ec.EllipticCurvePublicNumbers(int.from_bytes(qx, "big"), int.from_bytes(qy, "big"),
                                             ec.SECP256R1()).public_key()
        z = self.key.exchange(ec.ECDH(), peer)
        return kdfe(z, b"SECRET", qx, self.x)

    def _start_session(self, command: bytes, params: Reader) -> bytes:
        self.salted_to_us.append(command)
        nonce_caller = params.tpm2b()
        salt = self.salt_for(params.tpm2b())
        nonce_tpm = os.urandom(32)
        handle = 0x02FFFF00 + len(self.sessions)
        self.sessions[handle] = Session(kdfa(salt, b"ATH", nonce_tpm, nonce_caller, 256),
                                        nonce_caller, nonce_tpm)
        return with_header(TAG_NO_SESSIONS, 0, struct.pack(">I", handle) + tpm2b(nonce_tpm))

    def _answer_nv_read(self, command, index, auth, params: Reader) -> bytes:
        """Brute-force the typed PIN from the command HMAC, then say "PIN correct"."""
        self.pin_commands.append(command)
        session = self.sessions[auth.handle]
        size, offset = params.u16(), params.u16()
        name = self.index_names[index]
        cp = hashlib.sha256(struct.pack(">I", CC_NV_READ) + name + name
                            + struct.pack(">HH", size, offset)).digest()
        pin = recover_pin(session.key, cp, auth.nonce, session.nonce_tpm, auth.attributes,
                          auth.hmac)
        if pin is None:
            return with_header(TAG_NO_SESSIONS, 0x98E, b"")  # TPM_RC_AUTH_FAIL-ish
        self.recovered.append(pin)
        key = session.key + pin.encode()
        nonce_tpm = os.urandom(32)
        data = struct.pack(">II", 0, 5)
        mask = kdfa(key, b"XOR", nonce_tpm, auth.nonce, 8 * len(data))
        parameters = tpm2b(bytes(a ^ b for a, b in zip(data, mask)))
        rp = hashlib.sha256(struct.pack(">II", 0, CC_NV_READ) + parameters).digest()
        mac = hmac.new(key, rp + nonce_tpm + auth.nonce + bytes((auth.attributes,)),
                       hashlib.sha256).digest()
        self.forged_success += 1
        return with_header(TAG_SESSIONS, 0, struct.pack(">I", len(parameters)) + parameters
                           + tpm2b(nonce_tpm) + bytes((auth.attributes,)) + tpm2b(mac))


def recover_pin(session_key, cp, nonce_caller, nonce_tpm, attributes, mac) -> str | None:
    """The 4-digit PIN whose command HMAC is `mac`, or None (an offline brute force)."""
    tail = cp + nonce_caller + nonce_tpm + bytes((attributes,))
    for n in range(10000):
        pin = f"{n:04d}"
        if hmac.new(session_key + pin.encode(), tail, hashlib.sha256).digest() == mac:
            return pin
    return None


# ---- fixtures and helpers ----------------------------------------------------------------
@pytest.fixture
def enrolled(pin_env):
    """root enrolled (by root's `pinutil setup`, on the genuine TPM: that records the
    salt key), then every later TPM command of the policy goes through a proxy."""
    pin_env.enrol("root", PIN)
    proxy = TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.swtpm.state_dir, "mitm"))
    proxy.start()
    pin_env.write_policy(tcti=proxy.tcti)
    try:
        yield pin_env, proxy
    finally:
        proxy.stop()


def login(env, syslog_capture, backend, typed):
    service = env.service("pin", env.tpm_pin_line(backend=backend))
    report = syslog_capture.run_pam(env.pamd, service, user="root", answers=[typed])
    assert report["exit_status"] == 0 and report["stderr"] == "", report
    return report


def _is_pin_read(command: bytes) -> bool:
    """An NV_Read authorised by the index itself (not the owner's status read)."""
    (auth_handle, index), _, _ = parse_command(command, 2)
    return auth_handle == index


def no_leaked_handles(swtpm) -> None:
    for kind in ("handles-transient", "handles-loaded-session"):
        assert swtpm.tools("tpm2_getcap", kind).stdout.strip() == b"", kind


# ---- (a) a substituted salt key -----------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hide_persistent", [False, True], ids=["readpublic", "createprimary"])
def test_a_substituted_salt_key_never_logs_in_and_learns_no_pin(enrolled, syslog_capture,
                                                                 backend, hide_persistent):
    env, proxy = enrolled
    attacker = KeySubstitution(hide_persistent=hide_persistent)
    proxy.intercept = attacker
    report = login(env, syslog_capture, backend, WRONG)
    assert result_code(report, "auth") != PAM_SUCCESS
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert attacker.substituted, "the proxy never got to substitute the key"
    # The check refused the key before salting a session with it, so nothing that
    # depends on the PIN ever reached the attacker: nothing to brute-force.
    assert attacker.salted_to_us == []
    assert attacker.pin_commands == [] and attacker.recovered == []
    assert attacker.forged_success == 0
    assert any("salt key" in line for line in syslog_capture.messages()), \
        syslog_capture.messages()
    assert env.counter("root") == (0, 3)  # no attempt spent
    no_leaked_handles(env.swtpm)


def test_a_control_the_attack_works_against_a_client_that_trusts_its_key(enrolled):
    """Control: the attacker really breaks a session salted with its key. The check
    refuses the substituted key against the recorded Name; told to trust the
    attacker's Name instead, it gets "PIN correct" for a wrong PIN, and the real TPM
    counts nothing. So what the tests above assert is the Name check at work."""
    from pinutil import errors
    from pinutil.pin.index import PinIndex
    from pinutil.tpm.context import Tpm

    env, proxy = enrolled
    attacker = KeySubstitution()
    proxy.intercept = attacker
    handle = 0x01000000
    with Tpm(proxy.tcti) as tpm:
        with pytest.raises(errors.TpmUnavailable, match="salt key"):
            PinIndex(tpm, handle, salt_key_name=_genuine_name(env)).check(WRONG.encode())
        assert attacker.pin_commands == []
        PinIndex(tpm, handle, salt_key_name=name_of(attacker.area)).check(WRONG.encode())
    assert attacker.recovered == [WRONG] and attacker.forged_success == 1
    assert env.counter("root") == (0, 3)
    with Tpm(env.swtpm.tcti) as tpm, pytest.raises(errors.WrongPin):
        PinIndex(tpm, handle, salt_key_name=_genuine_name(env)).check(WRONG.encode())


def _genuine_name(env) -> bytes:
    from pinutil.pin import salt_key
    return salt_key.load(os.path.join(env.dir, "salt_key"))


# ---- (b) a replayed genuine answer -------------------------------------------------------
class Replay:
    """Record the NV_Read answer (and StartAuthSession) of a genuine login; replay them
    in later logins instead of asking the TPM."""

    def __init__(self) -> None:
        self.recorded: dict[int, bytes] = {}
        self.replaying = False
        self.replay_session = False
        self.replayed = 0

    def __call__(self, command: bytes, forward) -> bytes | None:
        code = HEADER.unpack_from(command)[2]
        if self.replaying and code in self.recorded and (
                code == CC_NV_READ and _is_pin_read(command)
                or code == CC_START_AUTH_SESSION and self.replay_session):
            self.replayed += 1
            return self.recorded[code]
        response = forward(command)
        if not self.replaying and response_code(response) == 0 and (
                code == CC_START_AUTH_SESSION or code == CC_NV_READ and _is_pin_read(command)):
            self.recorded[code] = response
        return response


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("replay_session", [False, True], ids=["answer", "answer+session"])
def test_b_a_replayed_pin_correct_answer_never_logs_in(enrolled, syslog_capture, backend,
                                                       replay_session):
    env, proxy = enrolled
    replay = Replay()
    proxy.intercept = replay
    genuine = login(env, syslog_capture, backend, PIN)
    assert result_code(genuine, "auth") == PAM_SUCCESS
    assert CC_NV_READ in replay.recorded
    replay.replaying, replay.replay_session = True, replay_session
    report = login(env, syslog_capture, backend, WRONG)
    assert replay.replayed >= 1
    assert result_code(report, "auth") != PAM_SUCCESS
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert env.counter("root") == (0, 3)  # the TPM never saw the wrong PIN
    no_leaked_handles(env.swtpm)


# ---- (c) forged answers ---------------------------------------------------------------------
def _forged_success(tag: int, with_auth: bool):
    def forge(command: bytes, response: bytes | None) -> bytes:
        _, auths, _ = parse_command(command, 2)
        data = tpm2b(os.urandom(8))
        body = data if tag == TAG_NO_SESSIONS else struct.pack(">I", len(data)) + data
        if with_auth:
            body += tpm2b(os.urandom(32)) + bytes((auths[0].attributes,)) + tpm2b(os.urandom(32))
        return with_header(tag, 0, body)
    return forge


FORGERIES = {
    "success-random-hmac": _forged_success(TAG_SESSIONS, True),
    "success-no-sessions": _forged_success(TAG_NO_SESSIONS, False),
    "success-empty-auth": lambda c, r: _forged_success(TAG_SESSIONS, False)(c, r),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
@pytest.mark.parametrize("tpm_sees_it", [False, True], ids=["withheld", "forwarded"])
def test_c_a_forged_pin_correct_answer_never_logs_in(enrolled, syslog_capture, backend,
                                                     forgery, tpm_sees_it):
    env, proxy = enrolled
    attacker = KeySubstitution()  # used only to try to recover the PIN afterwards
    sessions: list[tuple[bytes, bytes]] = []  # (StartAuthSession command, response)

    def intercept(command: bytes, forward) -> bytes | None:
        code = HEADER.unpack_from(command)[2]
        if code == CC_NV_READ and _is_pin_read(command):
            response = forward(command) if tpm_sees_it else None
            return FORGERIES[forgery](command, response)
        response = forward(command)
        if code == CC_START_AUTH_SESSION:
            sessions.append((command, response))
        return response

    proxy.intercept = intercept
    report = login(env, syslog_capture, backend, WRONG)
    assert result_code(report, "auth") != PAM_SUCCESS
    assert env.counter("root") == ((1, 3) if tpm_sees_it else (0, 3))
    # What the proxy saw does not give the PIN away: the salt is bound to the TPM's
    # key, and the attacker's own key yields a session key that matches no PIN.
    pin_reads = [e for e in proxy.commands(CC_NV_READ) if _is_pin_read(e.command)]
    assert len(pin_reads) == 1 and len(sessions) == 1
    index_name = _last_tpm2b(proxy.commands(CC_NV_READ_PUBLIC)[-1].reply)
    assert _recover_with_own_key(attacker, sessions[0], pin_reads[0].command,
                                 index_name) is None
    no_leaked_handles(env.swtpm)


def _last_tpm2b(response: bytes) -> bytes:
    r = Reader(response)
    r.tpm2b()
    return r.tpm2b()


def _recover_with_own_key(attacker, session, nv_read, name) -> str | None:
    start, started = session
    _, _, params = parse_command(start, 2)
    nonce_caller = params.tpm2b()
    salt = attacker.salt_for(params.tpm2b())
    nonce_tpm = Reader(started, HEADER.size + 4).tpm2b()
    _, auths, p = parse_command(nv_read, 2)
    cp = hashlib.sha256(struct.pack(">I", CC_NV_READ) + name + name + p.raw(4)).digest()
    return recover_pin(kdfa(salt, b"ATH", nonce_tpm, nonce_caller, 256), cp, auths[0].nonce,
                       nonce_tpm, auths[0].attributes, auths[0].hmac)


# ---- (d) the hierarchy passwords of `pinutil owner protect` -------------------------------
CC_HIERARCHY_CHANGE_AUTH = 0x129
RC_FAILURE = 0x101


class PasswordReader:
    """KeySubstitution, and when HierarchyChangeAuth comes in a session salted with the
    substituted key: decrypt its first parameter (newAuth, AES-128-CFB, Part 1 21.4;
    the old password is empty, so the session key alone keys it), keep it, and fail
    the command (the attacker has what it wanted)."""

    def __init__(self) -> None:
        self.attacker = KeySubstitution()
        self.learned: list[bytes] = []

    def __call__(self, command: bytes, forward) -> bytes | None:
        if HEADER.unpack_from(command)[2] == CC_HIERARCHY_CHANGE_AUTH:
            _, auths, params = parse_command(command, 1)
            session = self.attacker.sessions.get(auths[0].handle)
            if session is not None:
                bits = kdfa(session.key, b"CFB", auths[0].nonce, session.nonce_tpm, 256)
                self.learned.append(aes_cfb_decrypt(bits[:16], bits[16:], params.tpm2b()))
                return with_header(TAG_NO_SESSIONS, RC_FAILURE, b"")
        return self.attacker(command, forward)


def _hierarchies_protected(env) -> bool:
    from pinutil.tpm.context import Tpm

    with Tpm(env.swtpm.tcti) as tpm:
        return any(tpm.hierarchy_auth_set().values())


def test_d_owner_protect_never_salts_with_a_substituted_key(enrolled):
    """`pinutil owner protect` through an interposer that supplies its own salt key:
    refused before the session is salted, so the new owner and lockout passwords
    never reach it (review F15: on the old code the session was salted with whatever
    key the TPM's answer held, and the proxy read the new owner password)."""
    env, proxy = enrolled  # root's setup recorded the genuine salt key
    reader = PasswordReader()
    proxy.intercept = reader
    done = env.pinutil("--json", "owner", "protect")
    assert reader.attacker.substituted, "the proxy never got to substitute the key"
    assert reader.learned == [] and reader.attacker.salted_to_us == []
    assert done.returncode != 0 and b"salt key" in done.stderr + done.stdout, done
    assert not _hierarchies_protected(env)
    proxy.intercept = forward_everything  # the genuine TPM: protect finishes with the same passwords
    done = env.pinutil("--json", "owner", "protect")
    assert done.returncode == 0, done
    assert _hierarchies_protected(env)


def test_d_control_a_session_salted_with_its_key_gives_the_password_away(enrolled):
    """Control: told to trust the attacker's key, the change hands it the password, so
    the test above shows the Name check at work."""
    from pinutil import errors
    from pinutil.tpm.context import Tpm

    env, proxy = enrolled
    reader = PasswordReader()
    proxy.intercept = reader
    secret = os.urandom(32)
    with Tpm(proxy.tcti) as tpm:
        with pytest.raises(errors.TpmUnavailable, match="salt key"):
            tpm.change_hierarchy_auth("owner", b"", secret, _genuine_name(env))
        with pytest.raises(errors.PinutilError):
            tpm.change_hierarchy_auth("owner", b"", secret, name_of(reader.attacker.area))
    assert reader.learned == [secret]
    assert not _hierarchies_protected(env)


# ---- (e) the master secret of `pinutil master-key init/import` (review 2 G9) -------------
CC_CREATE, CC_CREATE_LOADED = 0x153, 0x191


class SecretReader:
    """KeySubstitution, and when Create or CreateLoaded comes in a session salted with
    the substituted key: decrypt its first parameter (inSensitive: the key's authValue
    and the master secret), keep it, and fail the command."""

    def __init__(self) -> None:
        self.attacker = KeySubstitution()
        self.learned: list[bytes] = []

    def __call__(self, command: bytes, forward) -> bytes | None:
        if HEADER.unpack_from(command)[2] in (CC_CREATE, CC_CREATE_LOADED):
            _, auths, params = parse_command(command, 1)
            for auth in auths:
                session = self.attacker.sessions.get(auth.handle)
                if session is not None:
                    bits = kdfa(session.key, b"CFB", auth.nonce, session.nonce_tpm, 256)
                    self.learned.append(aes_cfb_decrypt(bits[:16], bits[16:],
                                                        params.tpm2b()))
                    return with_header(TAG_NO_SESSIONS, RC_FAILURE, b"")
        return self.attacker(command, forward)


def test_e_the_master_secret_never_goes_to_a_substituted_salt_key(enrolled):
    """Loading a master secret (init, import) with a recorded salt key Name refuses a
    primary of another Name before the secret is sent (on the old code the session was
    salted with whatever key the TPM's answer held, and the proxy read the secret)."""
    from pinutil import errors
    from pinutil.master_key.lifecycle import MasterKeyAdmin
    from pinutil.tpm.context import Tpm

    env, proxy = enrolled
    reader = SecretReader()
    proxy.intercept = reader
    secret = os.urandom(32)
    with Tpm(proxy.tcti) as tpm:
        admin = MasterKeyAdmin(tpm, salt_key_name=_genuine_name(env),
                               auth_path=os.path.join(env.dir, "mk_auth"))
        with pytest.raises(errors.TpmUnavailable, match="salt key"):
            admin.load(secret)
    assert reader.attacker.substituted, "the proxy never got to substitute the key"
    assert not any(secret in blob for blob in reader.learned), "the proxy read the secret"
    assert reader.learned == []
