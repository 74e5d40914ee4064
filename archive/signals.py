"""What the archive announces. The recommender listens; the archive never imports it."""
from django.dispatch import Signal

# sender=None, exposure_ids=list[int]: new science exposures with vectors under the active DESOM-1.
exposures_ingested = Signal()
# sender=None, exposure_ids=list[int]: exposures removed from the archive.
exposures_deleted = Signal()
# sender=None, version=ModelVersion: a model version became active (indexes must follow it).
model_version_activated = Signal()
# sender=None, exposure_ids=list[int] | None, model_version=ModelVersion | None: vectors (under a
# DESOM-1) or cells and latent codes (under a DESOM-2) written or rewritten for these exposures
# (None: for any of them, under that version or under every active one).
vectors_changed = Signal()
# sender=None: a batch operation (ingest, assign) finished; a good moment to persist derived data.
batch_finished = Signal()
