"""Root URL map: admin, the REST API (archive and search), the schema and its docs, the
Virtual Observatory interface, and the pages."""
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import errors
from .converters import register

register()

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("recommender.api_urls")),
    path("api/", include("archive.api.urls")),
    re_path(r"^api/(?P<rest>.*)$", errors.api_not_found),
    path("", include("recommender.vo.urls")),
    path("", include("archive.urls")),
    path("", include("recommender.pages.urls")),
]

# Errors in each surface's shape: JSON under /api/, VOTable under the VO routes, HTML elsewhere.
handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
