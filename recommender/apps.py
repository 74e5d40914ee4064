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
