"""The Virtual Observatory routes, included at the site's root by config/urls.py: SIA v2 under
sia2/, DataLink under datalink/, SODA under soda/, TAP under tap/, Simple Cone Search under
scs/, each with its VOSI endpoints; the public coverage (MOC) under coverage/. Each route also answers with a trailing slash."""
from django.urls import path

from . import views

app_name = "vo"


def _both(route, view, name=None):
    return [path(route, view, name=name), path(route + "/", view)]


urlpatterns = [
    *_both("sia2/query", views.query, "query"),
    *_both("sia2/capabilities", views.capabilities, "capabilities"),
    *_both("sia2/availability", views.availability, "availability"),
    *_both("datalink/links", views.links, "links"),
    *_both("datalink/capabilities", views.datalink_capabilities, "datalink-capabilities"),
    *_both("datalink/availability", views.availability, "datalink-availability"),
    *_both("soda/sync", views.soda_sync, "soda"),
    *_both("soda/capabilities", views.soda_capabilities, "soda-capabilities"),
    *_both("soda/availability", views.availability, "soda-availability"),
    *_both("scs/query", views.cone, "scs"),
    *_both("scs/capabilities", views.cone_capabilities, "scs-capabilities"),
    *_both("scs/availability", views.availability, "scs-availability"),
    path("coverage/moc.fits", views.coverage_map, {"output": "fits"}, name="coverage-fits"),
    path("coverage/moc.json", views.coverage_map, {"output": "json"}, name="coverage-json"),
    path("coverage/map.png", views.coverage_map, {"output": "png"}, name="coverage-png"),
    *_both("tap/sync", views.tap_sync, "tap-sync"),
    *_both("tap/capabilities", views.tap_capabilities, "tap-capabilities"),
    *_both("tap/availability", views.tap_availability, "tap-availability"),
    *_both("tap/tables", views.tap_tables, "tap-tables"),
    *_both("tap/examples", views.tap_examples, "tap-examples"),
    *_both("tap/async", views.tap_async, "tap-async"),
    *_both("tap/async/<str:job_id>", views.tap_job, "tap-job"),
    *_both("tap/async/<str:job_id>/results/result", views.tap_job_result, "tap-job-result"),
    *_both("tap/async/<str:job_id>/<str:part>", views.tap_job_part, "tap-job-part"),
]
