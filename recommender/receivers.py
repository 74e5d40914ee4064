"""The recommender listens to the archive and keeps its FAISS indexes in step: exposures
added on ingest and removed on delete without a full rebuild; index files saved when a batch
operation finishes (not after every database batch, which would rewrite large files often)."""
import logging

from django.dispatch import receiver

from archive.signals import batch_finished, exposures_deleted, exposures_ingested, vectors_changed

from . import services

logger = logging.getLogger(__name__)


@receiver(exposures_ingested)
def add_to_indexes(sender, exposure_ids, model_version=None, **kwargs):
    try:
        services.on_exposures_ingested(exposure_ids, model_version)
    except Exception:  # the database is the truth; a broken index is rebuilt on next use
        logger.exception("could not add %d exposures to the indexes", len(exposure_ids))


@receiver(vectors_changed)
def follow_changed_vectors(sender, exposure_ids=None, model_version=None, **kwargs):
    try:
        services.on_vectors_changed(exposure_ids, model_version)
    except Exception:  # the database is the truth; a broken index is rebuilt on next use
        logger.exception("could not follow changed vectors in the indexes")


@receiver(exposures_deleted)
def remove_from_indexes(sender, exposure_ids, **kwargs):
    try:
        services.on_exposures_deleted(exposure_ids)
        services.flush_indexes()
    except Exception:
        logger.exception("could not remove %d exposures from the indexes", len(exposure_ids))


@receiver(batch_finished)
def save_indexes(sender, **kwargs):
    try:
        services.flush_indexes()
    except Exception:
        logger.exception("could not save the indexes")
