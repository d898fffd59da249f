"""moto's S3 server for barn's tests, bound to the host and port given.

Usage: serve.py HOST PORT. Exits when its stdin closes: barn-testkit holds
the write end, so when the test process goes away (stopped, panicked or
killed) the server goes too instead of lingering.
"""

import os
import sys
import threading

from moto.server import main


def exit_when_stdin_closes() -> None:
    while sys.stdin.buffer.read(4096):
        pass
    # os._exit: werkzeug's serving threads would keep a sys.exit waiting.
    os._exit(0)


threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
main(["-H", sys.argv[1], "-p", sys.argv[2]])
