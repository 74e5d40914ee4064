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
