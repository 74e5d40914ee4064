"""The archive's own listeners: new vectors get their prototype flags at once."""
import logging

from django.dispatch import receiver

from .signals import exposures_ingested

logger = logging.getLogger(__name__)


@receiver(exposures_ingested)
def flag_new_exposures(sender, exposure_ids, model_version=None, **kwargs):
    from .services.quality import recompute_flags

    try:
        recompute_flags(desom1=model_version, exposure_ids=exposure_ids)
    except Exception:  # flags can always be recomputed; never fail an ingest over them
        logger.exception("could not compute flags for %d new exposures", len(exposure_ids))
