"""The archive's records: exposures, the model versions that describe them, their vectors and
cells, the experts' cell labels and prototype flags, and the ingest runs that brought them in.

Vectors are stored portably as float32 bytes (see `archive.vectors`) so the same rows serve
SQLite and PostgreSQL; every vector and cell names the model version that made it.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Upper

from desom import footprint

from . import vectors


class ModelVersion(models.Model):
    """One trained DESOM checkpoint. At most one version of each kind is active."""

    DESOM1 = "desom1"
    DESOM2 = "desom2"
    KIND_CHOICES = [(DESOM1, "DESOM-1 (cutouts)"), (DESOM2, "DESOM-2 (histo-vectors)")]

    version_id = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=8, choices=KIND_CHOICES)
    checkpoint_path = models.CharField(max_length=1024)
    config = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, blank=True)
    # A DESOM-2 is trained on the histo-vectors of one DESOM-1; its cells mean nothing under another.
    trained_on = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="derived_versions")
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=Q(is_active=True),
                                    name="one_active_version_per_kind"),
        ]

    def __str__(self):
        return f"{self.kind} {self.version_id}{' (active)' if self.is_active else ''}"

    @property
    def map_shape(self) -> tuple[int, int]:
        return int(self.config.get("map_rows", 0)), int(self.config.get("map_cols", 0))


class Exposure(models.Model):
    """One exposure file and what its headers say. Calibration frames are kept with their
    metadata but never enter models, vectors, cells or search (is_science False)."""

    STATUS_OK = "ok"
    STATUS_WARNINGS = "warnings"
    STATUS_NO_SOURCES = "no_sources"
    STATUS_CHOICES = [(STATUS_OK, "ok"), (STATUS_WARNINGS, "ingested with warnings"),
                      (STATUS_NO_SOURCES, "no sources detected")]

    expnum = models.BigIntegerField(unique=True, help_text="Exposure number (odometer)")
    filename = models.CharField(max_length=255, blank=True, db_index=True)
    file_path = models.CharField(max_length=1024, unique=True)
    file_size = models.BigIntegerField(default=0)
    checksum = models.CharField(max_length=64, db_index=True, help_text="sha256 of the file")

    obstype = models.CharField(max_length=16, default="OBJECT", db_index=True)
    is_science = models.BooleanField(default=True, db_index=True)
    layout = models.CharField(max_length=16, blank=True, help_text="raw, processed or unknown")
    object_name = models.CharField(max_length=128, blank=True, db_index=True)
    ra_deg = models.FloatField(null=True, blank=True, db_index=True)
    dec_deg = models.FloatField(null=True, blank=True, db_index=True)
    # Unit vector of (RA, Dec): a cone search becomes a dot product the database can evaluate.
    sky_x = models.FloatField(null=True, blank=True)
    sky_y = models.FloatField(null=True, blank=True)
    sky_z = models.FloatField(null=True, blank=True)
    # Where the exposure lies (archive.geometry writes these; desom.footprint computes them):
    # the outline as a DALI polygon "ra1 dec1 ra2 dec2 ..." (degrees, ICRS), from the CCDs' WCS
    # ("wcs") or, for a file without one, MegaCam's nominal field about the pointing ("nominal").
    s_region = models.TextField(blank=True, default="")
    footprint_kind = models.CharField(max_length=8, blank=True, default="")
    s_fov = models.FloatField(null=True, blank=True, help_text="field diameter (deg)")
    s_resolution = models.FloatField(null=True, blank=True, help_text="pixel scale from the WCS (arcsec)")
    s_xel1 = models.PositiveIntegerField(null=True, blank=True, help_text="extent in pixels, first axis")
    s_xel2 = models.PositiveIntegerField(null=True, blank=True, help_text="extent in pixels, second axis")
    mjd_obs = models.FloatField(null=True, blank=True, db_index=True)
    date_obs = models.DateTimeField(null=True, blank=True, db_index=True)
    exptime = models.FloatField(null=True, blank=True, db_index=True)
    filter_name = models.CharField(max_length=32, blank=True)
    band = models.CharField(max_length=8, blank=True, db_index=True)
    airmass = models.FloatField(null=True, blank=True)
    instrument = models.CharField(max_length=64, blank=True)
    n_ccds = models.PositiveIntegerField(default=0)
    runid = models.CharField(max_length=32, blank=True, db_index=True)

    n_detected = models.PositiveIntegerField(default=0)
    n_sampled = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=STATUS_OK)
    warnings = models.JSONField(default=list, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    # The source statistics of desom.baseline (STATISTIC_NAMES -> value, null where
    # unmeasurable), from the ingest's own detections and stamps; DESOM-2 reads them beside the
    # histo-vector (features "histo+stats+coherent" or "histo+stats"). NULL, or the coherent pair
    # absent: not measured (a calibration frame, or ingested before the archive measured them;
    # `manage.py source_statistics` measures those).
    source_statistics = models.JSONField(null=True, blank=True, default=None)

    # End of the proprietary period; before it only staff and the run's members may see it.
    release_date = models.DateField(null=True, blank=True, db_index=True)
    # A copy of the exposure's CellAssignment under the active DESOM-2 (NULL without one), so
    # that the quality-label filter is an index scan of this table, not a semi-join over every
    # assignment. Written only by archive.services.versions.copy_active_cells, when cells are
    # assigned and when a DESOM-2 is activated; which label a cell carries is still decided per
    # request by quality.CellQualityMap, so relabelling a cell rewrites no exposure.
    desom2_cell = models.PositiveIntegerField(null=True, blank=True, editable=False,
                                              help_text="cell under the active DESOM-2 (a copy)")
    ingested_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["expnum"]
        indexes = [
            # The list's `band` filter (case-insensitive: UPPER(band) = UPPER(value)) with the
            # columns of the visibility rule and the id: a count of the exposures of one band a
            # user may see is an index-only scan, not a pass over the whole table.
            models.Index(Upper("band"), F("is_science"), F("release_date"), F("runid"), F("id"),
                         name="exposure_band_visible"),
            # The quality-label filter (desom2_cell IN the label's cells), alone or with a band,
            # and the visibility rule: a count is an index-only scan of the label's rows. `band`
            # itself comes last because PostgreSQL answers UPPER(band) from an index only when
            # the index also holds the column.
            models.Index(F("desom2_cell"), Upper("band"), F("is_science"), F("release_date"), F("runid"),
                         F("id"), F("band"), name="exposure_desom2_cell_visible"),
        ]

    def __str__(self):
        return f"{self.expnum} {self.filename}".strip()

    def save(self, *args, **kwargs):
        self.sky_x, self.sky_y, self.sky_z = sky_unit_vector(self.ra_deg, self.dec_deg)
        super().save(*args, **kwargs)

    @property
    def is_public(self) -> bool:
        from django.utils import timezone

        return self.release_date is None or self.release_date <= timezone.now().date()


def sky_unit_vector(ra_deg, dec_deg):
    """(x, y, z) of the pointing, by the geometry library's one conversion; None without one."""
    if ra_deg is None or dec_deg is None:
        return None, None, None
    return tuple(float(c) for c in footprint.unit(ra_deg, dec_deg))


class CCDFootprint(models.Model):
    """One CCD's science area on the sky, from its WCS: chooses the CCDs a cutout reads."""

    exposure = models.ForeignKey(Exposure, on_delete=models.CASCADE, related_name="ccd_footprints")
    position = models.PositiveIntegerField(help_text="0-based order of the CCD among the file's images")
    hdu_index = models.PositiveIntegerField()
    extname = models.CharField(max_length=32, blank=True)
    s_region = models.TextField(help_text="DALI polygon, degrees")
    nx = models.PositiveIntegerField()
    ny = models.PositiveIntegerField()
    pixel_scale = models.FloatField(help_text="arcsec per pixel")

    class Meta:
        ordering = ["exposure_id", "position"]
        constraints = [models.UniqueConstraint(fields=["exposure", "position"], name="one_footprint_per_ccd")]


class SkyCell(models.Model):
    """The spatial index: each HEALPix cell (nested, at archive.geometry.DEPTH) an exposure's
    footprint touches. A region query reads the exposures of the region's cells, then tests
    their footprints exactly."""

    exposure = models.ForeignKey(Exposure, on_delete=models.CASCADE, related_name="sky_cells")
    cell = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cell", "exposure"], name="one_row_per_cell_and_exposure")]


class RunAccess(models.Model):
    """A user entitled to the proprietary exposures of one observing run (RUNID)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="run_access")
    runid = models.CharField(max_length=32, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "runid"], name="unique_run_access")]


class ExposureVector(models.Model):
    """An exposure's histo-vector (weighted BMU counts over the DESOM-1 nodes) and mean soft
    prototype activations, under one DESOM-1 version."""

    exposure = models.ForeignKey(Exposure, on_delete=models.CASCADE, related_name="vectors")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="vectors")
    histo = models.BinaryField()
    activations = models.BinaryField(null=True, blank=True)
    n_detected = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exposure", "model_version"],
                                               name="one_vector_per_exposure_and_version")]

    @property
    def histo_array(self):
        return vectors.from_blob(self.histo)


class CellAssignment(models.Model):
    """An exposure's DESOM-2 cell under one DESOM-2 version."""

    exposure = models.ForeignKey(Exposure, on_delete=models.CASCADE, related_name="cells")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="cells")
    cell = models.PositiveIntegerField()
    quantization = models.FloatField(default=0.0)
    latent = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exposure", "model_version"],
                                               name="one_cell_per_exposure_and_version")]
        indexes = [models.Index(fields=["model_version", "cell"]),
                   # the members of a set of cells (a quality label's) from the index alone
                   models.Index(fields=["model_version", "cell", "exposure"], name="cell_members")]


QUALITY_LABELS = ["Good", "BT", "RBT", "B-Seeing", "BGP", "bad focus", "low exposure"]
MIXED_LABEL = "mixed"


class CellLabel(models.Model):
    """An expert's label for a DESOM-2 cell. Rows are never edited: a relabel adds a row and
    the newest row is the cell's label, so the history is kept. `mixed` marks a cell the expert
    left unlabelled on purpose (the paper's white cells)."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="cell_labels")
    cell = models.PositiveIntegerField()
    label = models.CharField(max_length=64)
    note = models.TextField(blank=True)
    labelled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model_version", "cell", "-created_at"])]


class PrototypeFlag(models.Model):
    """A named set of DESOM-1 nodes (for example the donut prototypes as "bad focus"). An
    exposure carries the flag when the share of its sources in those nodes passes the threshold,
    either as a share (mode `share`) or as a multiple of the archive's median share (`excess`)."""

    MODE_SHARE = "share"
    MODE_EXCESS = "excess"
    MODE_CHOICES = [(MODE_SHARE, "share of sources"), (MODE_EXCESS, "times the archive median")]

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="flags")
    name = models.CharField(max_length=64)
    nodes = models.JSONField(default=list)
    threshold = models.FloatField()
    mode = models.CharField(max_length=8, choices=MODE_CHOICES, default=MODE_SHARE)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_version", "name"], name="unique_flag_name")]

    def __str__(self):
        return self.name


class ExposureFlag(models.Model):
    """A flag an exposure carries now, with the share that set it (recomputed in bulk)."""

    exposure = models.ForeignKey(Exposure, on_delete=models.CASCADE, related_name="flags")
    flag = models.ForeignKey(PrototypeFlag, on_delete=models.CASCADE, related_name="exposures")
    share = models.FloatField()
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exposure", "flag"], name="unique_exposure_flag")]


class IngestRun(models.Model):
    """One `ingest` invocation: what it was asked, how far it got, and every failure."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    STATUS_CHOICES = [(RUNNING, "running"), (FINISHED, "finished"), (INTERRUPTED, "interrupted")]

    paths = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=RUNNING)
    scheduler = models.CharField(max_length=255, blank=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL)
    pid = models.IntegerField(null=True, blank=True)
    n_files = models.PositiveIntegerField(default=0)
    n_done = models.PositiveIntegerField(default=0)
    n_ingested = models.PositiveIntegerField(default=0)
    n_skipped = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    n_calibration = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    @property
    def progress(self) -> float:
        return self.n_done / self.n_files if self.n_files else 1.0


class IngestFailure(models.Model):
    run = models.ForeignKey(IngestRun, on_delete=models.CASCADE, related_name="failures")
    path = models.CharField(max_length=1024)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)


class AccessToken(models.Model):
    """A secret a user's scripts send (`Authorization: Token <secret>`) instead of a session.
    Only the secret's sha256 is stored; a user may hold several (one per script or machine),
    each revocable on its own, and each expires."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=64, blank=True)
    prefix = models.CharField(max_length=16, help_text="the secret's first characters, to tell tokens apart")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.prefix}… ({self.user})"
