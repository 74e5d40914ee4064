"""SIA v2 query and VOSI routes, included at sia2/ by config/urls.py."""
from django.urls import path

from . import views

app_name = "vo"

urlpatterns = [
    path("query", views.query, name="query"),
    path("query/", views.query),
    path("capabilities", views.capabilities, name="capabilities"),
    path("capabilities/", views.capabilities),
    path("availability", views.availability, name="availability"),
    path("availability/", views.availability),
]
