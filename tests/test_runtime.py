"""Every entry point waits passively unless the user says otherwise (desom/runtime.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRINT = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _env(policy):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    return env


@pytest.mark.parametrize("policy, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_manage_py_and_the_benchmarks_wait_passively_unless_told(policy, expected):
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", PRINT], cwd=ROOT, env=_env(policy),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == expected
    out = subprocess.run([sys.executable, "-c", "import benchmarks; " + PRINT], cwd=ROOT, env=_env(policy),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
    out = subprocess.run([sys.executable, "-c", "import config.wsgi; " + PRINT], cwd=ROOT,
                         env=_env(policy) | {"DJANGO_SETTINGS_MODULE": "config.settings"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == expected
