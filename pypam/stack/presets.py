"""Which services `pypam enable` puts the PIN into, and which it never touches.

`unlock`: "password at first login, PIN after". The password opens the session (and the
keyring, which needs the password); the PIN then answers sudo, polkit and the screen
lockers that have a service of their own. Not the display manager's service: GNOME's
lock screen and light-locker authenticate through gdm-password and lightdm, the very
services of the first login, so under `unlock` they stay password-only (name them with
`--service` to have the PIN there, at first login too).

`local`: every local login: the console, the display managers, su, and everything of
`unlock`.

Services that serve the network never get the PIN line: a PIN is a short secret meant
for a person at the machine (the TPM counts wrong PINs; a remote guesser would lock the
owner out, and a PIN-shaped password would spend attempts). Files that other services
include (common-auth, system-auth, ...) and `other` are never edited directly: the PIN
would reach every service including them, remote ones too.
"""
from __future__ import annotations

#: Screen lockers and privilege prompts with a pam.d file of their own.
LOCKERS = ("xscreensaver", "gnome-screensaver", "cinnamon-screensaver", "mate-screensaver",
           "xfce4-screensaver", "kde", "i3lock", "swaylock", "xlock", "xsecurelock",
           "physlock", "vlock", "hyprlock")
UNLOCK = ("sudo", "sudo-i", "polkit-1", *LOCKERS)
#: Local logins: the console and display managers (their password services).
LOGINS = ("login", "gdm-password", "lightdm", "sddm", "lxdm", "xdm", "slim", "greetd",
          "su", "su-l")
LOCAL = (*LOGINS, *UNLOCK)
PRESETS = {"unlock": UNLOCK, "local": LOCAL}

#: Services reached over the network: refused by name.
REMOTE = frozenset({"sshd", "dropbear", "xrdp-sesman", "cockpit", "vsftpd", "proftpd",
                    "pure-ftpd", "dovecot", "samba", "smtp", "imap", "pop3", "ppp",
                    "openvpn", "rlogin", "rsh", "rexec", "telnet", "remote", "ftp",
                    "radiusd", "squid", "webmin", "httpd", "nginx", "apache2"})
#: Never edited: the fallback, and services whose job is to ask for the password
#: itself (pinutil's enrolment proof must never accept a PIN).
NEVER = frozenset({"other", "pinutil", "pypam-decide", "passwd", "chfn", "chsh",
                   "chpasswd", "newusers"})
#: Keyring modules that receive PAM_AUTHTOK in auth (`--master-key` puts the token there).
KEYRING_MODULES = ("pam_gnome_keyring.so", "pam_kwallet5.so", "pam_kwallet.so")
