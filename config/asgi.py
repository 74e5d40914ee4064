import os

from desom.runtime import prefer_passive_waiting

prefer_passive_waiting()      # before the apps load torch (desom/runtime.py says why)

from django.core.asgi import get_asgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()
