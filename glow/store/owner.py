"""Who holds a lease: a runner process named so another process can tell whether it is dead.

An owner is `host:pid:nonce:namespace`. A PID means something only inside the PID namespace of
the kernel that gave it: two containers sharing a hostname (host networking) or two machines
with the same name each have their own process 1234. `namespace` is a digest of the kernel's
boot id and this process's PID namespace, so a runner judges another one dead by its PID only
when both live in the same namespace of the same boot. Everything else waits for the lease to
run out. Owners written before the namespace part existed (`host:pid:nonce`) are still read,
and never judged by PID: their namespace is unknown.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import uuid
from pathlib import Path


def _read(path: str, *, link: bool = False) -> str:
    try:
        return os.readlink(path) if link else Path(path).read_text(errors="replace").strip()
    except OSError:  # not Linux, or /proc not mounted: that part is unknown
        return ""


@functools.cache
def host_namespace() -> str:
    """This process's boot id and PID namespace, as a 12-character digest ('' if unknown)."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    pid_ns = _read("/proc/self/ns/pid", link=True)
    if not boot or not pid_ns:
        return ""
    return hashlib.sha256(f"{boot}|{pid_ns}".encode()).hexdigest()[:12]


def make_owner() -> str:
    """A lease owner naming this process (at most 64 characters, the column's width)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:12]}:{host_namespace()}"


def owner_is_dead(owner: str | None) -> bool:
    """Whether a lease owner was a process in this host namespace that no longer exists.

    Its cells can then be reclaimed at once instead of after the lease runs out. Only an owner
    with this process's hostname and namespace digest is judged by its PID.
    """
    parts = (owner or "").split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return False  # an old `host:pid:nonce` owner, or not a runner's: the lease decides
    host, pid, _, namespace = parts
    if host != socket.gethostname()[:24] or not namespace or namespace != host_namespace():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False
