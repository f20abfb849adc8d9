"""Run ``coinfluence ARGS`` and SIGKILL it inside one call: ``python kill_at.py MODULE:NAME:N[:torn] ARGS``.

The N-th call of ``MODULE.NAME`` kills the process at its start, as ``kill -9`` would at that
moment; with ``torn`` the call first writes its file (its second argument), which is then cut to
half its size, as a kill while the bytes reach the disk leaves it. Fault-injection tests use it
to stop a run at a chosen stage and check that ``--resume`` ends where an uninterrupted run does.
"""

import importlib
import os
import signal
import sys


def trap(spec: str) -> None:
    module, name, nth, *mode = spec.split(":")
    owner = importlib.import_module(module)
    original = getattr(owner, name)
    calls = 0

    def killing(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == int(nth):
            if mode == ["torn"]:
                original(*args, **kwargs)
                os.truncate(args[1], os.path.getsize(args[1]) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, killing)


if __name__ == "__main__":
    trap(sys.argv[1])
    sys.argv = ["coinfluence", *sys.argv[2:]]
    from coinfluence_cli.main import main

    main()
