"""Adapt several source cities to several target cities with one multi-city SemI2I model.

``python jobs/adapt_multi.py --help`` for the options. The code is :mod:`semi2i.cli.adapt_multi`; the installed
command ``semi2i-adapt-multi`` runs the same ``main()``.
"""

import sys

from semi2i.cli.adapt_multi import main, parse_args  # noqa: F401  (parse_args: the tests check commands and manifests with it)

if __name__ == "__main__":
    sys.exit(main())
