"""Root URL map: admin, the archive's API and pages, the recommender's search API."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("archive.urls")),
]
