"""How the library's processes wait: the one place the OpenMP wait policy is chosen.

An OpenMP thread that waits at a barrier spins by default (libgomp's ACTIVE policy after a short
spin). On a shared or busy machine, where astronomers run these commands, a spinning thread
waits for a descheduled sibling at every barrier: `manage.py demo` trained DESOM-1 at about 4 s
an iteration beside other work, 0.33 s with passive waiting under the same load
(benchmarks/bench_passive_wait.py measures it). Passive waiting costs a few percent on an idle
machine, so it is the default of every entry point (manage.py, the WSGI application, the
benchmarks, the tests); OMP_WAIT_POLICY set by the user always wins.

It must run before the OpenMP runtime starts (before torch, numpy's BLAS or sklearn load), so
this module imports nothing heavy.
"""
import os

WAIT_POLICY = "PASSIVE"


def prefer_passive_waiting() -> str:
    """Set OMP_WAIT_POLICY to PASSIVE unless the environment already sets it; returns the policy
    in force. Child processes (Dask workers, spawned fits) inherit it."""
    return os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
