from django.apps import AppConfig


class RecommenderConfig(AppConfig):
    name = "recommender"
    verbose_name = "Content search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The archive announces; the recommender listens and keeps its indexes in step.
        from archive.services import health

        from . import receivers  # noqa: F401
        from .services import index_readiness

        health.register("indexes", index_readiness)

        # TAP's objects in PostgreSQL (pgSphere, the ObsCore view, TAP_SCHEMA) follow the code.
        from django.db.models.signals import post_migrate

        from .vo import tap

        post_migrate.connect(tap.post_migrate, sender=self, dispatch_uid="desom-tap-install")
