"""vcn: VideoClusterNet face clustering for movies and TV episodes.

The core (``media``, ``faces``, ``method``, ``library``, ``evaluation``, ``report``) is pure:
functions take and return arrays and dataclasses. The orchestration installs beside it under the
same name from the repository's own folders: ``vcn.flows`` (flows/: Prefect flows and the CLI),
``vcn.tasks`` (tasks/: Prefect tasks) and ``vcn.storage`` (storage/: Parquet, ``manifest.json``,
atomic writes).
"""

__version__ = "0.1.0"
