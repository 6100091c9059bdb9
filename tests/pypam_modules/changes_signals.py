"""Negative control for the signal test: this module does change the host's signals."""
import signal

import pypam


def authenticate(pamh, flags, args):
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
    return pypam.PAM_SUCCESS
