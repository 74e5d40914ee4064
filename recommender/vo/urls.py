"""SIA v2 and VOSI routes (filled in with the VO interface)."""
urlpatterns = []
