"""An enrolment record names the salt key it was made under (pinutil/pin/enrolment.py):
the line in the file, the login's verdict on it, and the binding of older records.
tests/test_salt_key_clear.py has the attack this stops, on a real TPM Clear."""
from __future__ import annotations

import os

import pytest

from pinutil.errors import EnrolmentMismatch
from pinutil.pin import enrolment, salt_key
from pinutil.pin.enrolment import EnrolmentRecord, RecordError

NAME = bytes.fromhex("000b" + "ab" * 32)
OTHER = bytes.fromhex("000b" + "cd" * 32)
HANDLE = 0x01000000 + 1001


@pytest.fixture
def state_dir(tmp_path) -> str:
    """A state directory as root leaves it: records in `enrolments`, the Name in
    `salt_key`."""
    os.chmod(tmp_path, 0o755)
    return str(tmp_path)


def record(salt_key_name: bytes | None = NAME, uid: int = 1001) -> EnrolmentRecord:
    return EnrolmentRecord(uid=uid, user=f"user{uid}", nv_index=0x01000000 + uid,
                           enrolled="2026-01-01T00:00:00Z", salt_key=salt_key_name)


def verify(state_dir: str, uid: int = 1001) -> EnrolmentRecord:
    return enrolment.verify(f"{state_dir}/enrolments", f"user{uid}", uid, 0x01000000 + uid,
                            f"{state_dir}/salt_key")


def test_the_line_is_written_and_read_back(state_dir):
    enrolment.write(f"{state_dir}/enrolments", record(), as_root=True)
    with open(f"{state_dir}/enrolments/1001") as f:
        assert f"salt_key={NAME.hex()}\n" in f.read()
    assert enrolment.read(f"{state_dir}/enrolments", 1001) == record()
    assert record().as_json()["salt_key"] == NAME.hex()


def test_a_record_without_the_line_reads_as_unbound():
    old = b"uid=1001\nuser=user1001\nnv_index=0x010003e9\nenrolled=2026-01-01T00:00:00Z\n"
    assert enrolment.parse(old, "r") == record(None)
    assert record(None).text().encode() == old


@pytest.mark.parametrize("line", ["salt_key=", "salt_key=000b", "salt_key=zz" + "ab" * 33,
                                  "salt_key=0004" + "ab" * 32,
                                  "salt_key=000B" + "AB" * 32])
def test_a_damaged_line_makes_the_record_unreadable(line):
    text = record(None).text() + line + "\n"
    with pytest.raises(RecordError, match="unreadable"):
        enrolment.parse(text.encode(), "r")


def test_a_record_made_under_the_recorded_key_is_accepted(state_dir):
    salt_key.save(f"{state_dir}/salt_key", NAME)
    enrolment.write(f"{state_dir}/enrolments", record(), as_root=True)
    assert verify(state_dir) == record()


def test_a_record_made_under_another_key_is_refused(state_dir):
    """The TPM was cleared (or replaced) and root recorded the new key."""
    salt_key.save(f"{state_dir}/salt_key", OTHER)
    enrolment.write(f"{state_dir}/enrolments", record(), as_root=True)
    with pytest.raises(EnrolmentMismatch, match="cleared or replaced.*enrolled again"):
        verify(state_dir)


def test_a_bound_record_without_a_recorded_key_is_refused(state_dir):
    enrolment.write(f"{state_dir}/enrolments", record(), as_root=True)
    with pytest.raises(EnrolmentMismatch, match="no salt key is recorded now"):
        verify(state_dir)


def test_a_bound_record_with_an_unusable_key_record_is_refused(state_dir):
    with open(f"{state_dir}/salt_key", "w") as f:
        f.write("not a name\n")
    enrolment.write(f"{state_dir}/enrolments", record(), as_root=True)
    with pytest.raises(EnrolmentMismatch, match="does not hold"):
        verify(state_dir)


def test_an_unbound_record_is_accepted_as_before(state_dir):
    """Written before records named their key: accepted until migrate-state or
    `salt-key record` binds it (the residual risk the README names)."""
    salt_key.save(f"{state_dir}/salt_key", OTHER)
    enrolment.write(f"{state_dir}/enrolments", record(None), as_root=True)
    assert verify(state_dir) == record(None)


def test_binding_touches_only_unbound_records(state_dir):
    records = f"{state_dir}/enrolments"
    enrolment.write(records, record(None, 1001), as_root=True)
    enrolment.write(records, record(OTHER, 1002), as_root=True)
    assert enrolment.bind_unbound(records, NAME) == ["user1001"]
    assert enrolment.read(records, 1001) == record(NAME, 1001)
    assert enrolment.read(records, 1002) == record(OTHER, 1002)
    assert enrolment.bind_unbound(records, NAME) == []
    assert enrolment.made_under_another_key(records, NAME) == ["user1002"]
    assert enrolment.made_under_another_key(records, OTHER) == ["user1001"]


def test_binding_without_records_does_nothing(state_dir):
    assert enrolment.bind_unbound(f"{state_dir}/enrolments", NAME) == []
    assert not os.path.exists(f"{state_dir}/enrolments")
