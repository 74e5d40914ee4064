"""Signal receivers: keep the FAISS indexes in step with the archive (filled in with the index manager)."""
