"""What the recommender keeps in the database: the quality columns TAP publishes (a copy of
the archive's quality verdicts, refreshed when labels, flags or cells change)."""
from django.db import models


class ExposureQuality(models.Model):
    """One exposure's quality verdict as `archive.services.quality.quality_verdicts` gives it,
    for SQL (TAP's ivoa.obscore). Derived data: `recommender.vo.tap.refresh_quality` rebuilds it."""

    exposure = models.OneToOneField("archive.Exposure", on_delete=models.CASCADE, primary_key=True,
                                    related_name="tap_quality")
    desom2_cell = models.IntegerField(null=True)
    quality_label = models.CharField(max_length=64, null=True)
    quality_flags = models.TextField(null=True)
    label_probability = models.FloatField(null=True)


class QualityStamp(models.Model):
    """What the copy was made from (see `refresh_quality`); one row."""

    stamp = models.CharField(max_length=255)
    refreshed_at = models.DateTimeField(auto_now=True)


class TapJob(models.Model):
    """One asynchronous TAP query (a UWS 1.1 job): who owns it, its parameters, its phase and
    times, where its result lies. `recommender.vo.uws` is the only writer."""

    PENDING, QUEUED, EXECUTING = "PENDING", "QUEUED", "EXECUTING"
    COMPLETED, ERROR, ABORTED = "COMPLETED", "ERROR", "ABORTED"
    PHASES = [(p, p) for p in (PENDING, QUEUED, EXECUTING, COMPLETED, ERROR, ABORTED)]

    id = models.CharField(max_length=32, primary_key=True)
    owner = models.ForeignKey("auth.User", null=True, on_delete=models.CASCADE, related_name="tap_jobs")
    # An anonymous job belongs to the client address that made it; a user's job to the user.
    client = models.CharField(max_length=80, db_index=True)
    run_id = models.CharField(max_length=64, blank=True)
    phase = models.CharField(max_length=10, choices=PHASES, default=PENDING, db_index=True)
    parameters = models.JSONField(default=dict)
    uploads = models.JSONField(default=list)          # [[table name, file name in the job's folder]]
    base_url = models.CharField(max_length=500)
    links_url = models.CharField(max_length=500)
    execution_duration = models.PositiveIntegerField()
    destruction = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True)
    ended_at = models.DateTimeField(null=True)
    heartbeat_at = models.DateTimeField(null=True)
    backend_pid = models.IntegerField(null=True)      # the worker's PostgreSQL backend, to cancel on ABORT
    error = models.TextField(blank=True)
    result_file = models.CharField(max_length=64, blank=True)
    result_mime = models.CharField(max_length=100, blank=True)
    result_rows = models.BigIntegerField(null=True)
    result_bytes = models.BigIntegerField(null=True)
    task_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
