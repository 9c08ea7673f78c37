"""Child processes that die with the Glow process that started them, even on kill -9.

`glow run` starts helper servers (the embedded Prefect server, the bundled simulator). Stopping
them in a `finally` covers every exit but one: a parent killed with SIGKILL runs no cleanup, and
its servers lived on for good, each holding a port and hundreds of MB. The parent therefore
holds the write end of a pipe that is the child's stdin (`lifeline_popen_kwargs`): the kernel
closes it however the parent ends, and a thread in the child (`watch_parent`) that reads it to
EOF then ends the child's whole process group, grandchildren included.

A pipe rather than Linux's parent-death signal (prctl PR_SET_PDEATHSIG): that signal fires when
the *thread* that forked exits, and Glow starts servers from worker threads too (`glow serve`'s
lifespan, a flow's thread); a pipe is tied to the process and works on every POSIX system.

`python -m glow.lifeline MODULE [ARGS...]` runs `python -m MODULE ARGS...` under that watch,
for children whose code is not Glow's (uvicorn).
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import threading
from typing import Any


def lifeline_popen_kwargs() -> dict[str, Any]:
    """`subprocess.Popen` arguments that give the child a lifeline (its stdin) and a group.

    The child leads a process group of its own, so that it and everything it starts can be
    ended together, and so that a Ctrl-C in the terminal reaches only the parent, which then
    stops its children in order. Keep the Popen object (and so the pipe) alive while the child
    is wanted: closing `process.stdin` tells the child to go.
    """
    kwargs: dict[str, Any] = {"stdin": subprocess.PIPE}
    if os.name == "posix":
        kwargs["start_new_session"] = True
    return kwargs


def watch_parent(stream: Any = None) -> threading.Thread:
    """In the child: end this process group once `stream` (default: stdin) reaches EOF."""
    source = stream if stream is not None else sys.stdin.buffer

    def watch() -> None:
        try:
            while source.read(4096):
                pass  # the parent writes nothing; EOF is the message
        except (OSError, ValueError):
            pass
        _end_group()

    thread = threading.Thread(target=watch, name="glow-lifeline", daemon=True)
    thread.start()
    return thread


def _end_group() -> None:
    """SIGKILL this process's group: this process and everything it started.

    No SIGTERM first: the parent that wanted the results is gone, and a process that does not
    handle SIGTERM would die of it before it could escalate to its children (the grandchildren
    that ignore it would stay).
    """
    if os.name != "posix":
        os._exit(1)
    group = os.getpgrp()
    if group != os.getpid():
        # Not a group leader (started without lifeline_popen_kwargs): end only this process.
        os.kill(os.getpid(), signal.SIGKILL)
        return
    os.killpg(group, signal.SIGKILL)


def stop_group(process: subprocess.Popen[Any], timeout: float) -> int:
    """Stop a child started with a lifeline, and its children: SIGTERM, then SIGKILL.

    (Should this process be killed while it waits here, the pipe closes and the child's own
    watch ends the group.)
    """
    group = process.pid if os.name == "posix" else None
    if process.poll() is None:
        _signal(process, group, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal(process, group, signal.SIGKILL)
            process.wait()
    if group is not None:
        # The child is gone; anything it started and left behind goes with its group.
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if process.stdin is not None:
        try:
            process.stdin.close()
        except OSError:
            pass
    return process.returncode


def _signal(process: subprocess.Popen[Any], group: int | None, sig: int) -> None:
    try:
        if group is not None:
            os.killpg(group, sig)
        else:
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str]) -> None:
    """`python -m glow.lifeline MODULE ARGS...`: run a module as __main__ under the watch."""
    if not argv:
        sys.exit("usage: python -m glow.lifeline MODULE [ARGS...]")
    watch_parent()
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
