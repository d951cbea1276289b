"""Ingest a city's rasters (and labels) into a Zarr city store.

``python jobs/ingest.py --help`` for the options. The code is :mod:`semi2i.cli.ingest`; the installed
command ``semi2i-ingest`` runs the same ``main()``.
"""

import sys

from semi2i.cli.ingest import main, parse_args  # noqa: F401  (parse_args: the tests check commands and manifests with it)

if __name__ == "__main__":
    sys.exit(main())
