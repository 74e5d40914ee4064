"""Page routes (filled in with the pages)."""
urlpatterns = []
