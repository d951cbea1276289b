"""Sweep SemI2I's loss weights and decay epoch with Ray Tune + ASHA, and write the best adapt config.

``python jobs/tune.py --help`` for the options. The code is :mod:`semi2i.cli.tune`; the installed
command ``semi2i-tune`` runs the same ``main()``.
"""

import sys

from semi2i.cli.tune import main, parse_args  # noqa: F401  (parse_args: the tests check commands and manifests with it)

if __name__ == "__main__":
    sys.exit(main())
