"""`glow.lifeline`: a child and everything it starts end when their parent is killed with SIGKILL.

Real processes: a parent script starts `python -m glow.lifeline` on a module that starts a
grandchild ignoring SIGTERM (so the SIGKILL that follows the grace period is exercised too);
the test kills the parent alone and watches /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, process_alive, wait_for

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and /proc")

CHILD = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(300)"], stdout=subprocess.PIPE, text=True)
grandchild.stdout.readline()  # it ignores SIGTERM from now on
print(grandchild.pid, flush=True)
time.sleep(300)
"""

PARENT = """
import subprocess, sys, time
from glow.lifeline import lifeline_popen_kwargs
child = subprocess.Popen([sys.executable, "-m", "glow.lifeline", "lifeline_child"],
                         stdout=subprocess.PIPE, text=True, **lifeline_popen_kwargs())
print(child.pid, child.stdout.readline().strip(), flush=True)
time.sleep(300)
"""


def test_sigkill_of_the_parent_ends_child_and_grandchild(tmp_path: Path) -> None:
    (tmp_path / "lifeline_child.py").write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PARENT)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    pids: list[int] = []
    try:
        line = parent.stdout.readline()  # type: ignore[union-attr]
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and all(process_alive(p) for p in pids), line
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_for(lambda: not any(process_alive(p) for p in pids), 15, "child and grandchild to end")
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
        for pid in pids:  # only what this test started
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_stop_group_ends_the_grandchild_too(tmp_path: Path) -> None:
    """A normal stop (`stop_group`) ends what the child started, not only the child."""
    from glow.lifeline import lifeline_popen_kwargs, stop_group

    (tmp_path / "lifeline_child.py").write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, "-m", "glow.lifeline", "lifeline_child"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        **lifeline_popen_kwargs(),
    )
    grandchild = int(child.stdout.readline())  # type: ignore[union-attr]
    try:
        started = time.monotonic()
        stop_group(child, timeout=5)
        assert time.monotonic() - started < 10
        wait_for(lambda: not process_alive(grandchild), 10, "the grandchild to end")
    finally:
        if process_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
