"""Settings read from the environment accept what an operator would write."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_lower_case_log_level_starts_the_project(tmp_path):
    # gunicorn takes "warning"; Django's logging config took only "WARNING" and stopped at start.
    env = {**os.environ, "LOG_LEVEL": "warning", "ARCHIVE_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no issues" in done.stdout
