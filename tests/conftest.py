"""Shared fixtures. Tests that touch the database use pytest-django's `db` fixture; the data
directory of every test session is a fresh temporary folder so nothing leaks into var/."""
import os
import tempfile

# Must be set before Django's settings are imported by pytest-django.
os.environ.setdefault("ARCHIVE_DATA_DIR", tempfile.mkdtemp(prefix="desom-test-data-"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
