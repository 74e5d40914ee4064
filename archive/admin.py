from django.contrib import admin

from . import models


@admin.register(models.Exposure)
class ExposureAdmin(admin.ModelAdmin):
    list_display = ("expnum", "filename", "obstype", "band", "exptime", "n_detected", "status", "release_date")
    list_filter = ("is_science", "obstype", "band", "status", "layout")
    search_fields = ("expnum", "filename", "object_name", "runid")
    readonly_fields = ("checksum", "ingested_at", "updated_at")


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("version_id", "kind", "is_active", "created_at", "trained_on")
    list_filter = ("kind", "is_active")


@admin.register(models.ExposureVector)
class ExposureVectorAdmin(admin.ModelAdmin):
    list_display = ("exposure", "model_version", "n_detected", "created_at")
    list_select_related = ("exposure", "model_version")
    exclude = ("histo", "activations")


@admin.register(models.CellAssignment)
class CellAssignmentAdmin(admin.ModelAdmin):
    list_display = ("exposure", "model_version", "cell", "quantization")
    list_filter = ("model_version",)
    list_select_related = ("exposure", "model_version")
    exclude = ("latent",)


@admin.register(models.CellLabel)
class CellLabelAdmin(admin.ModelAdmin):
    list_display = ("cell", "label", "model_version", "labelled_by", "created_at")
    list_filter = ("label", "model_version")


@admin.register(models.PrototypeFlag)
class PrototypeFlagAdmin(admin.ModelAdmin):
    list_display = ("name", "mode", "threshold", "is_active", "model_version", "updated_at")


@admin.register(models.ExposureFlag)
class ExposureFlagAdmin(admin.ModelAdmin):
    list_display = ("exposure", "flag", "share")
    list_select_related = ("exposure", "flag")


class IngestFailureInline(admin.TabularInline):
    model = models.IngestFailure
    extra = 0
    readonly_fields = ("path", "reason", "created_at")


@admin.register(models.IngestRun)
class IngestRunAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "n_files", "n_ingested", "n_skipped", "n_failed", "started_at", "finished_at")
    list_filter = ("status",)
    inlines = [IngestFailureInline]


@admin.register(models.RunAccess)
class RunAccessAdmin(admin.ModelAdmin):
    list_display = ("user", "runid")
    search_fields = ("runid", "user__username")
