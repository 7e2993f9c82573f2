"""opencode's launcher, run as the child: `python -I -S launch.py PARENT_PID UMASK PROGRAM ARGS...`.

It sets the umask (octal; uvloop's subprocess_exec has no umask of its own), asks Linux to kill it
when its parent dies (PR_SET_PDEATHSIG, which survives exec), makes sure that parent is still
PARENT_PID (it may have died before the request, and then nothing would come), and becomes PROGRAM
by exec: same pid, same process group, same environment. Elsewhere than Linux there is no
parent-death signal; the umask and the exec still happen.

A script on its own (standard library only, run with -I -S): it starts in about 15 ms, and
never imports the sidecar or anything from the environment's paths.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# SIGKILL: opencode 1.18.33 has no SIGTERM handler anyway (it exits -15 within 3 ms), and a hung
# process must not outlive its parent still listening with the old password.
DEATH_SIGNAL = signal.SIGKILL
EXIT_ORPHANED = 125


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print("usage: launch.py PARENT_PID UMASK PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    parent, umask, program = int(argv[1]), int(argv[2], 8), argv[3:]
    os.umask(umask)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) != 0:
            print(f"launch.py: prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 2
    if os.getppid() != parent:
        # The parent died between fork and prctl: we were handed to another reaper already.
        return EXIT_ORPHANED
    try:
        os.execv(program[0], program)
    except OSError as exc:
        print(f"launch.py: cannot run {program[0]}: {exc.strerror}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
