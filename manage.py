#!/usr/bin/env python
"""Django's command-line entry point for the archive."""
import os
import sys


def main():
    from desom.runtime import prefer_passive_waiting

    prefer_passive_waiting()      # before any OpenMP runtime loads (desom/runtime.py says why)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
