"""A logging.Logger per handle that writes through pam_syslog."""
import logging
import syslog

_PRIORITY = {
    logging.DEBUG: syslog.LOG_DEBUG,
    logging.INFO: syslog.LOG_INFO,
    logging.WARNING: syslog.LOG_WARNING,
    logging.ERROR: syslog.LOG_ERR,
    logging.CRITICAL: syslog.LOG_CRIT,
}


class PamSyslogHandler(logging.Handler):
    def __init__(self, pamh) -> None:
        super().__init__()
        self._pamh = pamh

    def emit(self, record: logging.LogRecord) -> None:
        try:
            priority = _PRIORITY.get(record.levelno, syslog.LOG_NOTICE)
            self._pamh.syslog(priority, self.format(record))
        except Exception:  # noqa: BLE001, S110 - logging must never change a PAM result
            pass


def make_logger(pamh) -> logging.Logger:
    # A fresh, unregistered Logger: logging.getLogger() would keep one per name forever.
    logger = logging.Logger(f"pypam.{pamh.module}")  # noqa: LOG001
    logger.setLevel(logging.DEBUG if pamh.debug else logging.INFO)
    logger.propagate = False
    logger.addHandler(PamSyslogHandler(pamh))
    return logger
