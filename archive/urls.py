from django.urls import path

from . import views

app_name = "archive"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("exposures/<int:pk>/download/", views.download, name="download"),
    path("exposures/<int:pk>/preview.png", views.preview, name="preview"),
]
