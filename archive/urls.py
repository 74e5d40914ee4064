from django.urls import path

from . import views

app_name = "archive"

urlpatterns = [
    path("health/", views.health, name="health"),
]
