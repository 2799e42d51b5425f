"""`python -m benchmarks.worker`: one contender's step in a process of its own.

Started by `benchmarks.isolation.WorkerStep`. Reads one JSON line {"factory", "kwargs",
"imports"}, builds the step, then runs one step per further line; after the set-up and after
every step it replies with the peak memory (MiB) that the step added to this process. It ends
when its input closes.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from benchmarks.harness import proc_status_mib


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to the log, not into the replies
    spec = json.loads(sys.stdin.readline())
    module, function = spec["factory"].split(":")
    factory = getattr(importlib.import_module(module), function)
    for name in spec["imports"]:  # a library's import cost is not the model's memory
        importlib.import_module(name)
    before = proc_status_mib("VmRSS")
    step = factory(**spec["kwargs"])
    replies.write(f"{proc_status_mib('VmHWM') - before:.1f}\n")
    for _ in sys.stdin:
        step()
        replies.write(f"{proc_status_mib('VmHWM') - before:.1f}\n")


if __name__ == "__main__":
    main()
