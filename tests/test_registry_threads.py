"""utils.Registry imports its package's plugins on the first lookup: two threads looking up at once (the thread
pool of bench/bench_vs_dspy.py building a LoopConfig in each worker) must both see every plugin; the second one
used to see an empty registry ("unknown proposer 'edit'; registered: ")."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from cpo_engine.utils import Registry


def test_first_lookups_from_two_threads_both_see_every_plugin(tmp_path, monkeypatch):
    pkg = tmp_path / "slow_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from cpo_engine.utils import Registry\nREG = None\n")
    for name in ("a", "b"):  # each plugin module takes a while to import, then registers itself
        (pkg / f"{name}.py").write_text(
            "import time\nimport slow_plugins\ntime.sleep(0.3)\n"
            f"slow_plugins.REG.add({name!r}, {{'help': {name!r}}}, print)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import slow_plugins

    slow_plugins.REG = Registry("plugin", "slow_plugins", [str(pkg)])
    start = threading.Barrier(4)

    def look(_):
        start.wait()
        return slow_plugins.REG.names()

    try:
        with ThreadPoolExecutor(4) as pool:
            seen = list(pool.map(look, range(4)))
    finally:
        for m in [m for m in sys.modules if m == "slow_plugins" or m.startswith("slow_plugins.")]:
            del sys.modules[m]
    assert seen == [("a", "b")] * 4, seen
