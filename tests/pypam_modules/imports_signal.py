"""Imports what might touch signals (signal, subprocess, threading, asyncio) and starts
a thread, but changes nothing itself: the host's signals must stay as they were."""
import asyncio  # noqa: F401
import signal
import subprocess  # noqa: F401
import threading

import pypam


def authenticate(pamh, flags, args):
    signal.getsignal(signal.SIGINT)
    t = threading.Thread(target=sum, args=(range(1000),))
    t.start()
    t.join()
    return pypam.PAM_SUCCESS
