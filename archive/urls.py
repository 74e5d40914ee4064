from django.urls import path

from . import views

app_name = "archive"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("health/live/", views.live, name="live"),
    path("health/ready/", views.ready, name="ready"),
    path("exposures/<dbid:pk>/download/", views.download, name="download"),
    path("exposures/<dbid:pk>/preview.png", views.preview, name="preview"),
]
