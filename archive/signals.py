"""What the archive announces. The recommender listens; the archive never imports it."""
from django.dispatch import Signal

# sender=None, exposure_ids=list[int]: new science exposures with vectors under the active DESOM-1.
exposures_ingested = Signal()
# sender=None, exposure_ids=list[int]: exposures removed from the archive.
exposures_deleted = Signal()
# sender=None, version=ModelVersion: a model version became active (indexes must follow it).
model_version_activated = Signal()
# sender=None, exposure_ids=list[int] | None: vectors or cells changed for these (None = all).
vectors_changed = Signal()
# sender=None: a batch operation (ingest, assign) finished; a good moment to persist derived data.
batch_finished = Signal()
