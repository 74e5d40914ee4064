from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import views

app_name = "archive-api"

router = DefaultRouter()
router.register("exposures", views.ExposureViewSet, basename="exposure")
router.register("models", views.ModelVersionViewSet, basename="model")
router.register("desom2/cells", views.CellViewSet, basename="cell")
router.register("flags", views.PrototypeFlagViewSet, basename="flag")
router.register("ingest-runs", views.IngestRunViewSet, basename="ingest-run")
router.register("tokens", views.TokenViewSet, basename="token")

urlpatterns = [
    path("quality-check/", views.QualityCheckView.as_view(), name="quality-check"),
    path("desom2/map/", views.Desom2MapView.as_view(), name="desom2-map"),
    path("token/", views.TokenView.as_view(), name="token"),
    path("", include(router.urls)),
]
