"""GPU kernels beside their torch references; installed as ``cpo_engine.kernels``. The dispatch point is
:mod:`cpo_engine.kernels.dispatch` (:func:`~cpo_engine.kernels.dispatch.score_topk`), re-exported here.

Run from the repository root, Python also finds this folder as a top-level package ``kernels`` (the current
folder comes first on ``sys.path`` for ``python -c``, ``python -m`` and notebooks), which would shadow the PyPI
package ``kernels`` that transformers imports. Under that name this file steps aside: it loads the installed
package in its place, or, when none is installed, stays an empty module, as a plain (namespace) folder would
(transformers probes for ``kernels`` and must find no cpo_engine code there; tests/test_no_shadowing.py).
"""

if __name__ == "kernels":
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os
    import sys as _sys

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _path = [p for p in _sys.path if isinstance(p, str) and _os.path.abspath(p or _os.curdir) != _root]
    _spec = _machinery.PathFinder.find_spec("kernels", _path)
    if _spec is not None and _spec.loader is not None:
        _module = _util.module_from_spec(_spec)
        _sys.modules["kernels"] = _module  # the import system returns what sys.modules holds after this file ran
        try:
            _spec.loader.exec_module(_module)
        except BaseException:
            _sys.modules.pop("kernels", None)
            raise
    else:
        # no installed `kernels`: look like a namespace package (no __file__, no __version__), which is what
        # transformers' probe treats as "not installed" (an empty module with a file counts as installed)
        __file__ = None  # noqa: F811
    del _machinery, _util, _os, _sys, _root, _path, _spec
else:
    from .dispatch import *  # noqa: F401,F403
    from .dispatch import __all__  # noqa: F401
