"""The ingest demo: synthetic source/target cities -> georeferenced GeoTIFFs -> Zarr city stores.

``python jobs/demo.py --help`` for the options. The code is :mod:`semi2i.cli.demo`; the installed
command ``semi2i-demo`` runs the same ``main()``.
"""

import sys

from semi2i.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
