"""pamh.syslog and pamh.logger at every level; the `debug` argument gates DEBUG."""
import syslog

import pypam


def authenticate(pamh, flags, args):
    pamh.syslog(syslog.LOG_NOTICE, "direct-notice-line")
    pamh.syslog(syslog.LOG_DEBUG, "direct-debug-line")
    log = pamh.logger
    log.debug("logger-debug-line %d", 1)
    log.info("logger-info-line %s", "two")
    log.warning("logger-warning-line")
    log.error("logger-error-line")
    log.critical("logger-critical-line with %s", "percent %s %n")
    return pypam.PAM_SUCCESS
