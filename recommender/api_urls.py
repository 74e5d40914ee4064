from django.urls import path

from . import api

app_name = "recommender-api"

urlpatterns = [
    path("exposures/<dbid:pk>/similar/", api.SimilarView.as_view(), name="similar"),
    path("search/prototypes/", api.PrototypeSearchView.as_view(), name="search-prototypes"),
    path("search/cutout/", api.CutoutSearchView.as_view(), name="search-cutout"),
    path("search/exposure/", api.ExposureSearchView.as_view(), name="search-exposure"),
]
