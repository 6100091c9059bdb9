"""The real gnome-keyring in a sandbox: a user's session bus, login keyring and checks.

A desktop gives a logged-in user, before any PAM module of the session runs: a
runtime directory /run/user/UID (0700) named by XDG_RUNTIME_DIR (pam_systemd sets
it), and a D-Bus session bus at $XDG_RUNTIME_DIR/bus (systemd --user's dbus.socket).
The sandbox has no systemd, so `KeyringSession` makes the same: the directory, a
`dbus-daemon --session` run as the user on that socket (it dies with the sandbox),
and XDG_RUNTIME_DIR handed to PAM sessions by pam_env (Debian's login runs
`pam_env readenv=1` before its other session lines). pam_gnome_keyring then does
what it does on a desktop: `gnome-keyring-daemon --daemonize --login` at session
open, given the stashed PAM_AUTHTOK on its standard input, and the daemon's secrets
component is started by D-Bus activation on the first Secret Service call.

The oracles ask the running daemon, as the user, over that bus (dbus-send,
secret-tool): is the `login` collection Locked, and what does a stored secret read.
They share no code with pypam or with tools/pypam-keyring-rekey.
"""
from __future__ import annotations

import re
import subprocess
import time

from tests.realapps.harness import PinBox

#: Debian packages of these tests, installed in the sandbox's layer only.
KEYRING_PACKAGES = ("gnome-keyring", "libpam-gnome-keyring", "dbus-daemon", "dbus-bin",
                    "libsecret-tools", "python3-jeepney")
LOGIN_COLLECTION = "/org/freedesktop/secrets/collection/login"
#: The test secret's attributes (secret-tool store/lookup).
ATTRIBUTES = ["pypam-test", "keyring"]
#: A locked daemon in the foreground, in a session of its own as a daemon is; `cat`
#: ends when the daemon closes its standard output (KeyringSession.start_daemon).
LOCKED_DAEMON = ("(setsid gnome-keyring-daemon --foreground --components=secrets"
                 " </dev/null 2>/dev/null &) | cat")


class KeyringSession:
    """`user`'s runtime directory and session bus in `pin_box`'s sandbox."""

    def __init__(self, pin_box: PinBox, user: str, uid: int) -> None:
        self.pin_box = pin_box
        self.box = pin_box.box
        self.user = user
        self.runtime = f"/run/user/{uid}"
        self.bus = f"unix:path={self.runtime}/bus"
        self.box.run(["install", "-d", "-m", "0700", "-o", user, "-g", user, self.runtime])
        self.box.write("/etc/security/pam_env.conf",
                       f"XDG_RUNTIME_DIR DEFAULT={self.runtime}\n")
        self.dbus = self.box.popen(
            ["env", f"XDG_RUNTIME_DIR={self.runtime}", "dbus-daemon", "--session",
             "--nofork", f"--address={self.bus}", "--print-address"],
            user=user, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if not self.dbus.stdout.readline().startswith(self.bus.encode()):
            raise RuntimeError("the session bus did not start")

    @property
    def env(self) -> list[str]:
        """`env` arguments of a command in the user's session."""
        return ["env", f"XDG_RUNTIME_DIR={self.runtime}",
                f"DBUS_SESSION_BUS_ADDRESS={self.bus}"]

    def run(self, argv: list[str], input: str = "", check: bool = True):
        return self.box.run([*self.env, *argv], user=self.user, input=input, check=check)

    # -- the daemon ------------------------------------------------------------------
    def start_daemon(self, password: str | None = None) -> None:
        """Start gnome-keyring-daemon as pam_gnome_keyring does (`--login`, the
        password on stdin: it unlocks, or creates, the login keyring, and goes on the
        bus when the first client's D-Bus activation runs `--start`), or with the
        keyring locked (no password: as a session where no keyring module ran, whose
        daemon systemd's user unit starts in the foreground); returns once the locked
        one is on the bus.

        Not `--daemonize` for the locked one: that returns as soon as the control
        socket listens, before the daemon has connected to the bus and taken
        org.freedesktop.secrets (in about half the runs here). The next query then
        finds the name unowned, and D-Bus activation starts a second daemon
        (`--start`) that races the first one for it. In the foreground the daemon
        closes its standard output once it is initialised, its names taken (its own
        readiness signal, gkd-main.c): `cat` ends then, and with it this call."""
        if password is None:
            self.run(["sh", "-c", LOCKED_DAEMON])
        else:
            self.run(["gnome-keyring-daemon", "--daemonize", "--login"], input=password)

    def daemon_pids(self) -> list[str]:
        # the process name, cut to 15 characters by the kernel
        found = self.box.run(["pgrep", "-u", self.user, "-x", "gnome-keyring-d"], check=False)
        return found.stdout.decode().split()

    def stop_daemon(self) -> None:
        """End the user's daemons (as at logout and reboot); the keyring file stays."""
        pids = self.daemon_pids()
        if pids:  # one may end by itself meanwhile (the activated `--start` helper)
            self.box.run(["kill", *pids], check=False)
        deadline = time.monotonic() + 20
        while self.daemon_pids():
            if time.monotonic() > deadline:
                raise RuntimeError("gnome-keyring-daemon did not stop")
            time.sleep(0.1)

    def create_keyring(self, password: str, secret: str) -> None:
        """A login keyring locked with `password`, holding `secret`; no daemon left."""
        self.start_daemon(password)
        self.run(["secret-tool", "store", "--label=pypam test", *ATTRIBUTES], input=secret)
        assert self.lookup() == secret
        self.stop_daemon()

    # -- oracles ---------------------------------------------------------------------
    def locked(self) -> bool:
        """The login collection's Locked property, from the daemon on the user's bus
        (D-Bus activation starts one, locked, if none runs)."""
        done = self.run(["dbus-send", f"--bus={self.bus}", "--print-reply",
                         "--dest=org.freedesktop.secrets", LOGIN_COLLECTION,
                         "org.freedesktop.DBus.Properties.Get",
                         "string:org.freedesktop.Secret.Collection", "string:Locked"])
        value = re.search(r"boolean (true|false)", done.stdout.decode())
        assert value, done.stdout
        return value.group(1) == "true"

    def lookup(self) -> str:
        """The stored secret (ask only while unlocked: a locked keyring would prompt)."""
        return self.run(["secret-tool", "lookup", *ATTRIBUTES]).stdout.decode()
