"""`python -m benchmarks.peak_rss FILE MODULE [ARGS...]`: run MODULE as `python -m MODULE ARGS`
would, then write this process's peak RSS (VmHWM, MiB) into FILE, however MODULE exits.

For a step that runs a whole command in a process of its own: the parent cannot read a child's
peak after it exits (`wait4`'s ru_maxrss carries the parent's own peak over the fork).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from benchmarks.harness import proc_status_mib


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        Path(out).write_text(f"{proc_status_mib('VmHWM')}\n")


if __name__ == "__main__":
    main()
