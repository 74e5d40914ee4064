from django.db import connection
from django.http import JsonResponse


def health(request):
    """Liveness and database reachability, for load balancers and the VO availability check."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        database = "ok"
        status = 200
    except Exception as exc:  # the DB being down is the case this endpoint exists to report
        database = f"unavailable: {exc.__class__.__name__}"
        status = 503
    return JsonResponse({"status": "ok" if status == 200 else "degraded", "database": database,
                         "engine": connection.vendor}, status=status)
