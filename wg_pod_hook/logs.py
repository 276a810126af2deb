"""Logging to syslog/journald under the identifier ``wg-pod``."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

# The syslog socket; tests point it elsewhere to read what the hook logs.
SOCKET_ENV = "WG_POD_SYSLOG_SOCKET"


def setup(level: str = "info", *, stderr: bool = False) -> None:
    """Send wg-pod's log to syslog (when the machine has one) and, for the
    command line, to stderr as well."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    address = os.environ.get(SOCKET_ENV, "/dev/log")
    if os.path.exists(address):
        try:
            syslog = logging.handlers.SysLogHandler(
                address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        except OSError:
            pass  # no listener behind the socket: stderr is all there is
        else:
            syslog.ident = f"wg-pod[{os.getpid()}]: "
            syslog.setFormatter(logging.Formatter("%(message)s"))
            root.addHandler(syslog)
    if not root.handlers and not stderr:
        # No syslog here: stay quiet rather than let logging's last-resort
        # handler print to stderr, where the hook's one line belongs.
        root.addHandler(logging.NullHandler())
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("wg-pod: %(levelname)s: %(message)s"))
        root.addHandler(console)
    # pyroute2 logs its own chatter at warning level; it is noise in the journal.
    logging.getLogger("pyroute2").setLevel(logging.ERROR)
