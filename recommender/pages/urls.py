"""Page routes, included at the site root by config/urls.py."""
from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "pages"

urlpatterns = [
    path("", views.search, name="search"),
    path("exposures/<dbid:pk>/", views.exposure_detail, name="exposure"),
    path("exposures/<dbid:pk>/density.png", views.density_png, name="density"),
    path("exposures/<dbid:pk>/histo.png", views.histo_png, name="histo"),
    path("exposures/<dbid:pk>/download/confirm/", views.download_confirm, name="download-confirm"),
    path("maps/desom1/", views.desom1_map, name="desom1"),
    path("maps/desom1/prototypes.png", views.desom1_mosaic_png, name="desom1-mosaic"),
    path("maps/desom1/nodes/<int:node>/", views.node_detail, name="node"),
    path("maps/desom1/nodes/<int:node>/prototype.png", views.node_png, name="node-png"),
    path("maps/desom2/", views.desom2_map, name="desom2"),
    path("maps/desom2/cells/<int:cell>/", views.cell_detail, name="cell"),
    path("search/upload/", views.upload, name="upload"),
    path("accounts/login/", views.login, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="/"), name="logout"),
]
