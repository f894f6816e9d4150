"""The supervisor of ``serve --processes N`` with real child processes: a stop signal that
arrives while the children are still being started reaches every child already started, and
no later child starts. (The full ``serve --processes 2`` is tested in test_cli.py.)"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from server.supervisor import Child, supervise

CHILD = """
import pathlib, signal, sys, time
fate = pathlib.Path(sys.argv[1])
def stop(*_):
    fate.write_text("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
time.sleep(10)
fate.write_text("never stopped")
sys.exit(3)
"""


def test_a_stop_signal_while_children_start_reaches_them_all_and_starts_no_more(
    tmp_path: Path,
) -> None:
    started: list[int] = []

    def command(host: str, child: Child) -> list[str]:
        started.append(child.index)
        if child.index == 1:  # SIGTERM arrives while the second child is being started
            os.kill(os.getpid(), signal.SIGTERM)
        return [sys.executable, "-c", CHILD, str(tmp_path / f"child-{child.index}")]

    before = signal.getsignal(signal.SIGTERM)
    supervise("127.0.0.1", [Child(index, 0, 0) for index in range(3)], command=command)

    assert started == [0, 1]
    fates = {path.name: path.read_text() for path in tmp_path.iterdir()}
    # A child signalled before it installed its handler dies without writing: also stopped.
    assert "never stopped" not in fates.values(), fates
    assert signal.getsignal(signal.SIGTERM) == before  # the supervisor's handler is gone
