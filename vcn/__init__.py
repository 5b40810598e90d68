"""vcn: VideoClusterNet face clustering for movies and TV episodes.

The package is the pure core: functions take and return arrays and dataclasses. Orchestration
(Prefect tasks and flows, Dask) lives in the sibling packages ``tasks`` and ``flows``; reading
and writing Parquet files and ``manifest.json`` lives in ``storage``.
"""

__version__ = "0.1.0"
