from django.urls import path

from . import views

app_name = "archive"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("exposures/<dbid:pk>/download/", views.download, name="download"),
    path("exposures/<dbid:pk>/preview.png", views.preview, name="preview"),
]
