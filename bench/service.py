"""pinutild under load and at rest: concurrent PIN logins, its memory, its idle exit.

    .venv/bin/python bench/service.py [--clients 8] [--logins 500] [--idle-exit 2]

(a) concurrent logins: --clients threads, each logging one user of its own in
    --logins times, one new PAM host process per login (build/pamhost, tpm_pin
    backend=daemon, as sudo or a screen locker would), all at once. Each client mixes
    right and wrong PINs in a fixed pattern (never more than two wrong in a row, so
    pinutild's per-user delay never applies), so every login's result and the prompt
    it showed ("PIN (3 attempts left): ") are known in advance and checked; afterwards
    each index's failure counter is read out of band (tpm2-tools, owner read) and must
    be exactly the wrong PINs typed since that user's last right one.
(b) memory: pinutild's RSS (server and TPM worker) before and after (a).
(c) idle exit under socket activation: a listening socket held here, as systemd's
    pinutild.socket holds it, and the service started on the first connection with
    it (LISTEN_FDS); the first login (the service starts), the service leaving after
    --idle-exit seconds without clients (and no TPM session left behind in the swtpm),
    and the next login starting it again.
Against a private swtpm; the users are the system accounts daemon, bin, sys, ... whose
PINs exist only in that TPM. Not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.cases import Context
from bench.pin import PIN, PINUTIL, PYTHON, pin_setup, service_rss_kb
from devtools.pamhost import CLEAN_ENV, PAM_AUTH_ERR, PAM_SUCCESS, build_host
from devtools.pinutild import Pinutild
from devtools.swtpm import Swtpm

USERS = ("daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp")
WRONG = "1357"
LIMIT = 5
PYPAM_SO = os.path.join(ROOT, "build", "pam_pypam.so")
RESULTS = os.path.join(ROOT, "bench", "service.json")


def is_wrong(client: int, login: int) -> bool:
    """Two wrong PINs, then three right ones, shifted per client: pinutild's per-user
    delay starts only after more than two wrong PINs in a row."""
    return (login + client) % 5 in (3, 4)


def expected_prompt(wrong_in_a_row: int) -> str:
    left = LIMIT - wrong_in_a_row
    return "PIN: " if wrong_in_a_row == 0 else f"PIN ({left} attempts left): "


class Setup:
    """A swtpm, a policy naming the service's socket, PINs for `users`, a pam.d file."""

    def __init__(self, workdir: str, policy: str, users: list[str]) -> None:
        self.workdir, self.policy, self.users = workdir, policy, users
        self.socket = os.path.join(os.path.dirname(policy), "pinutild.sock")
        with open(policy, "a", encoding="utf-8") as f:
            f.write(f"service_socket = {self.socket}\n")
        for user in users:
            subprocess.run([PINUTIL, "--policy", policy, "--stdin", "setup", user],
                           input=(PIN + "\n").encode(), check=True, capture_output=True)
        self.confdir = os.path.join(workdir, "pam.d")
        os.mkdir(self.confdir)
        with open(os.path.join(self.confdir, "pin"), "w", encoding="utf-8") as f:
            f.write(f"auth required {PYPAM_SO} module=tpm_pin policy={policy} "
                    "backend=daemon\n")

    def login(self, host: str, user: str, pin: str, expect: int) -> tuple[float, dict]:
        """One PAM host process; (in-PAM ms, its report). Raises on a wrong outcome."""
        argv = [host, "--confdir", self.confdir, "--service", "pin", "--user", user,
                "--stages", "auth", "--expect", str(expect), "--answers-fd", "0",
                "--answers-nul", "--quiet"]
        done = subprocess.run(argv, input=pin.encode() + b"\0", capture_output=True,
                              env=CLEAN_ENV, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"host exit {done.returncode}: {done.stderr[-300:]!r}")
        report = json.loads(done.stdout)
        if report["failures"]:
            raise RuntimeError(f"{user}: rc {report['stages'][-1]['rc']}, expected {expect}")
        return report["elapsed_ms"], report


# -- (a) concurrent logins ---------------------------------------------------------------
def concurrent(setup: Setup, host: str, swtpm: Swtpm, logins: int) -> dict:
    problems: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    trailing = {}

    def client(k: int, user: str) -> None:
        in_a_row = 0
        for i in range(logins):
            wrong = is_wrong(k, i)
            try:
                ms, report = setup.login(host, user, WRONG if wrong else PIN,
                                         PAM_AUTH_ERR if wrong else PAM_SUCCESS)
                prompts = [m["text"] for m in report["messages"] if m["style"] == 1]
                if prompts != [expected_prompt(in_a_row)]:
                    raise RuntimeError(f"prompt {prompts} after {in_a_row} wrong")
            except Exception as e:  # noqa: BLE001 - every failure is reported
                with lock:
                    problems.append(f"{user} login {i}: {e}")
                return
            in_a_row = in_a_row + 1 if wrong else 0
            with lock:
                latencies.append(ms)
        trailing[user] = in_a_row

    threads = [threading.Thread(target=client, args=(k, u)) for k, u in enumerate(setup.users)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    counters = {u: swtpm.read_pin_counter(0x01000000 + pwd.getpwnam(u).pw_uid)
                for u in setup.users}
    mismatched = {u: (counters[u], trailing.get(u)) for u in setup.users
                  if counters[u] != (trailing.get(u), LIMIT)}
    latencies.sort()
    wrong_total = sum(is_wrong(k, i) for k in range(len(setup.users)) for i in range(logins))
    return {
        "clients": len(setup.users), "logins_per_client": logins,
        "logins": len(latencies), "wrong_pins": wrong_total,
        "failures": problems, "seconds": seconds,
        "logins_per_second": len(latencies) / seconds if seconds else 0.0,
        "in_pam_ms_median": statistics.median(latencies) if latencies else None,
        "in_pam_ms_p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        "counters": {u: list(c) for u, c in counters.items()},
        "expected_failures": trailing, "counter_mismatches": mismatched,
    }


# -- (c) idle exit under socket activation --------------------------------------------
class Activator:
    """What systemd's pinutild.socket does: hold the listening socket, start the service
    with it (fd 3, LISTEN_FDS=1, LISTEN_PID = the service's pid) when a client
    connects and no service runs, and keep holding it after the service leaves."""

    def __init__(self, path: str, argv: list[str]) -> None:
        self.path, self.argv = path, argv
        if os.path.exists(path):  # the previous service's, in our private directory
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o666)
        self.listener.listen(128)
        self.proc: subprocess.Popen | None = None
        self.starts: list[float] = []
        self.exits: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            if self.proc is not None and self.proc.poll() is not None:
                self.exits.append((time.monotonic(), self.proc.returncode))
                self.proc = None
            if self.proc is None and selector.select(0.005):
                self._start()
            else:
                time.sleep(0.005)

    def _start(self) -> None:
        fd = self.listener.fileno()
        # The socket as fd 3; LISTEN_PID must be the service's own pid: the shell's,
        # which exec keeps.
        moved = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
        script = moved + 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@"'
        self.proc = subprocess.Popen(["/bin/sh", "-c", script, "sh", *self.argv],
                                     pass_fds=(fd,), cwd=ROOT, env={"PATH": "/usr/bin:/bin"},
                                     stdin=subprocess.DEVNULL)
        self.starts.append(time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.listener.close()


def idle_exit(setup: Setup, host: str, swtpm_sessions, idle: float) -> dict:
    argv = [PYTHON, "-m", "pinutil.service", "--policy", setup.policy,
            "--idle-exit", str(idle)]
    activator = Activator(setup.socket, argv)
    try:
        first_ms, _ = setup.login(host, setup.users[0], PIN, PAM_SUCCESS)
        replied = time.monotonic()
        rss = service_rss_kb(activator.proc.pid)
        deadline = time.monotonic() + idle + 30
        while not activator.exits and time.monotonic() < deadline:
            time.sleep(0.01)
        left = activator.exits[0] if activator.exits else None
        sessions_after_exit = swtpm_sessions()
        second_ms, _ = setup.login(host, setup.users[0], PIN, PAM_SUCCESS)
        warm_ms, _ = setup.login(host, setup.users[0], PIN, PAM_SUCCESS)
    finally:
        activator.stop()
    return {
        "idle_exit_s": idle,
        "first_login_in_pam_ms": first_ms,
        "left_after_s": None if left is None else left[0] - replied,
        "exit_status": None if left is None else left[1],
        "tpm_sessions_left": sessions_after_exit,
        "starts": len(activator.starts),
        "login_after_restart_in_pam_ms": second_ms,
        "next_login_in_pam_ms": warm_ms,
        "rss_kb_while_running": rss,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--logins", type=int, default=500, help="logins per client")
    ap.add_argument("--idle-exit", type=float, default=2.0)
    ap.add_argument("--json", default=RESULTS)
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= len(USERS):
        ap.error(f"--clients must be 1..{len(USERS)}")
    host = build_host()
    workdir = tempfile.mkdtemp(prefix="pypam-bench-service-", dir="/tmp")
    os.chmod(workdir, 0o755)
    ctx = Context(root=ROOT, workdir=workdir, modules="", pypam_so=PYPAM_SO, pam_python_so="")
    try:
        with pin_setup(ctx) as extra:
            policy = extra["policy"]
            setup = Setup(workdir, policy, list(USERS[:args.clients]))
            # pin_setup's simulator, for queries only (counters, loaded sessions).
            swtpm = Swtpm(os.path.join(os.path.dirname(policy), "tpm"))

            def sessions() -> list[int]:
                return [h for h in swtpm.loaded_handles() if 0x02000000 <= h < 0x04000000]

            # No NV budget: each user's 200 wrong PINs and their resets are far more
            # TPM writes than the default allows an hour (docs/pinutild.md).
            service = Pinutild(policy, setup.socket, ["--nv-writes-per-hour", "0"])
            service.start()
            try:
                setup.login(host, setup.users[0], PIN, PAM_SUCCESS)  # the worker starts
                rss_before = service_rss_kb(service.proc.pid)
                load = concurrent(setup, host, swtpm, args.logins)
                rss_after = service_rss_kb(service.proc.pid)
                alive = service.alive()
                log = service.output()
            finally:
                service.stop()
            idle = idle_exit(setup, host, sessions, args.idle_exit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "concurrent": load,
           "rss_kb_before": rss_before, "rss_kb_after": rss_after,
           "service_alive_after": alive, "service_log": log[-2000:], "idle": idle}
    report(doc)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    ok = (not load["failures"] and not load["counter_mismatches"] and alive
          and idle["exit_status"] == 0 and idle["tpm_sessions_left"] == [])
    return 0 if ok else 1


def report(doc: dict) -> None:
    c = doc["concurrent"]
    print(f"(a) {c['clients']} clients x {c['logins_per_client']} PIN logins at once, one "
          f"PAM host process each (tpm_pin backend=daemon): {c['logins']} done, "
          f"{c['wrong_pins']} with a wrong PIN, in {c['seconds']:.1f} s "
          f"({c['logins_per_second']:.0f}/s); in-PAM median {c['in_pam_ms_median']:.1f} ms, "
          f"p99 {c['in_pam_ms_p99']:.1f} ms")
    print(f"    failures: {len(c['failures'])} {c['failures'][:3]}")
    print(f"    counters read out of band (pinCount, pinLimit): {c['counters']}")
    print(f"    expected pinCount (wrong PINs since the last right one): "
          f"{c['expected_failures']}; mismatches: {c['counter_mismatches'] or 'none'}")
    mb = {k: f"{v / 1024:.1f} MB" for k, v in doc["rss_kb_before"].items()}
    mb_after = {k: f"{v / 1024:.1f} MB" for k, v in doc["rss_kb_after"].items()}
    print(f"(b) pinutild RSS before: {mb}; after: {mb_after}; "
          f"alive after: {doc['service_alive_after']}")
    i = doc["idle"]
    left = "did not leave" if i["left_after_s"] is None else f"{i['left_after_s']:.2f} s"
    print(f"(c) socket activation, --idle-exit {i['idle_exit_s']:g}: first login (service "
          f"starting) {i['first_login_in_pam_ms']:.1f} ms in-PAM; left {left} after its last "
          f"reply (exit status {i['exit_status']}), TPM sessions left: "
          f"{i['tpm_sessions_left']}; next login started it again "
          f"({i['starts']} starts): {i['login_after_restart_in_pam_ms']:.1f} ms, "
          f"then {i['next_login_in_pam_ms']:.1f} ms")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
