"""`pypam stack simulate` (its exact JSON) and every command on hostile input: a clear
answer naming file and line, never a traceback, never a hang."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.accounts import as_user

from .harness import ROOT

PYPAM = [sys.executable, "-m", "pypam"]


def run(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    command = [*PYPAM, *args]
    if user:
        command = [*as_user(user, "nogroup"), *command]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False, env={"PATH": os.environ["PATH"],
                                            "PYTHONPATH": ROOT})
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def confdir(tmp_path):
    (tmp_path / "svc").write_text(
        "auth requisite pam_nologin.so\n"
        "auth [success=1 default=ignore] pam_pypam.so module=tpm_pin\n"
        "auth sufficient pam_unix.so\n"
        "auth optional /nonexistent/pam_gone.so\n"
        "auth required pam_permit.so\n")
    return tmp_path


def test_simulate_prints_the_issue_json(confdir):
    done = run("stack", "simulate", "svc", "--stage", "auth", "--confdir", str(confdir),
               "--result", "tpm_pin=auth_err", "--result", "pam_unix.so=success",
               "--result", "pam_gone.so=success", "--default", "0", "--json",
               "--assume-modules")          # pam_pypam.so is not installed here
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert list(data) == ["service", "stage", "code", "result", "stage_ran", "ran"]
    assert (data["code"], data["result"], data["stage_ran"]) == (0, "success", True)
    assert [(r["line"], r["returned"], r["action"]) for r in data["ran"]] == [
        (1, 0, "ok"), (2, 7, "ignore"), (3, 0, "done")]
    assert data["ran"][1] == {"file": f"{confdir}/svc", "line": 2, "module": "pam_pypam.so",
                              "args": ["module=tpm_pin"], "returned": 7, "action": "ignore"}


def test_a_missing_module_returns_module_unknown_whatever_result_says(confdir):
    data = json.loads(run("stack", "simulate", "svc", "--stage", "auth", "--confdir",
                          str(confdir), "--result", "pam_unix.so=auth_err", "--result",
                          "pam_gone.so=success", "--default", "success", "--json").stdout)
    assert [(r["line"], r["returned"]) for r in data["ran"]] == [(1, 0), (2, 28), (3, 7),
                                                                  (4, 28), (5, 0)]
    assert data["code"] == 0


def test_a_line_without_a_result_is_a_clear_error(confdir):
    done = run("stack", "simulate", "svc", "--stage", "auth", "--confdir", str(confdir),
               "--result", f"{confdir}/svc:1=success")
    assert done.returncode == 64
    # line 2 (pam_pypam.so, not installed here) needs no result: libpam never calls it
    assert f"{confdir}/svc:3" in done.stderr and "no --result matches" in done.stderr


def test_a_configuration_pam_start_refuses_has_stage_ran_false(tmp_path):
    (tmp_path / "svc").write_text("auth required ?\n")
    data = json.loads(run("stack", "simulate", "svc", "--stage", "auth", "--confdir",
                          str(tmp_path), "--default", "success", "--json").stdout)
    assert data["stage_ran"] is False and data["code"] == 26 and data["ran"] == []
    assert data["error"]["file"] == f"{tmp_path}/svc" and data["error"]["line"] == 1


def test_password_runs_both_chauthtok_passes(tmp_path):
    (tmp_path / "svc").write_text("password required pam_unix.so\n")
    data = json.loads(run("stack", "simulate", "svc", "--stage", "password", "--confdir",
                          str(tmp_path), "--default", "success", "--json").stdout)
    assert [r["pass"] for r in data["ran"]] == ["prelim", "update"]


HOSTILE = {
    "binary": bytes(range(256)) * 64,
    "huge line": b"auth required pam_unix.so " + b"x" * (1024 * 1024) + b"\n",
    "huge backslash line": b"\\" * (1024 * 1024) + b"\n",
    "NUL bytes": b"auth\0required pam_unix.so\nauth required pam_permit.so\0\n",
    "non-UTF-8": b"auth required pam_\xff\xfe.so \xe9\n",
    "CRLF": b"auth required pam_unix.so\r\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["explain", "check", "simulate"])
def test_hostile_files_get_an_answer_with_file_and_line(tmp_path, name, command):
    (tmp_path / "svc").write_bytes(HOSTILE[name])
    extra = ["--stage", "auth", "--default", "success"] if command == "simulate" else []
    target = [] if command == "check" else ["svc"]
    done = run("stack", command, *target, "--confdir", str(tmp_path), *extra)
    assert done.returncode in (0, 1, 2)
    assert done.stdout


def test_an_unreadable_file_is_reported_not_crashed_on(tmp_path):
    tmp_path.chmod(0o755)
    (tmp_path / "svc").write_text("auth required pam_permit.so\n")
    (tmp_path / "svc").chmod(0o600)
    done = run("stack", "explain", "svc", "--confdir", str(tmp_path), user="nobody")
    assert done.returncode == 0
    assert "pam_start fails" in done.stdout and "svc" in done.stdout


def test_deep_and_self_including_stacks_end_with_a_finding(tmp_path):
    for i in range(40):
        (tmp_path / f"s{i}").write_text(f"auth substack {tmp_path}/s{i + 1}\n")
    (tmp_path / "s40").write_text("auth required pam_permit.so\n")
    (tmp_path / "loop").write_text(f"auth include {tmp_path}/loop\n")
    deep = run("stack", "check", "s0", "--confdir", str(tmp_path))
    assert "maximum level of substacks" in deep.stdout and deep.returncode == 2
    loop = run("stack", "check", "loop", "--confdir", str(tmp_path))
    assert f"{tmp_path}/loop:1" in loop.stdout and "include loop" in loop.stdout
    assert loop.returncode == 2


def test_a_missing_directory_is_a_clear_error(tmp_path):
    done = run("stack", "check", "--confdir", str(tmp_path / "none"))
    assert done.returncode == 66 and "cannot read" in done.stderr


def test_a_pam_d_file_others_can_write_is_an_error(tmp_path):
    (tmp_path / "svc").write_text("auth required pam_unix.so\n")
    (tmp_path / "svc").chmod(0o666)
    done = run("stack", "check", "svc", "--confdir", str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path}/svc:0: error:" in done.stdout and "writable" in done.stdout


def test_a_device_as_a_pam_d_file_is_reported_not_read_forever(tmp_path):
    (tmp_path / "svc").symlink_to("/dev/zero")
    done = run("stack", "check", "svc", "--confdir", str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path}/svc:0: error:" in done.stdout and "not a regular file" in done.stdout
