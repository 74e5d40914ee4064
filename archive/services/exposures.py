"""Removing exposures from the archive (the files on disk are left alone)."""
from __future__ import annotations

from django.db import transaction

from ..models import Exposure
from ..signals import exposures_deleted


def delete_exposures(exposure_ids) -> int:
    ids = [int(i) for i in exposure_ids]
    with transaction.atomic():
        existing = list(Exposure.objects.filter(pk__in=ids).values_list("pk", flat=True))
        Exposure.objects.filter(pk__in=existing).delete()
        transaction.on_commit(lambda: exposures_deleted.send(sender=None, exposure_ids=existing))
    return len(existing)
