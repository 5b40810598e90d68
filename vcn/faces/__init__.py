"""Stage 1, faces and tracks: detection, the quality filter, alignment and embedding, tracking,
and stitching chunks into one title (``ingest`` runs one chunk end to end)."""
