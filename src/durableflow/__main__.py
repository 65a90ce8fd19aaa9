"""``python -m durableflow``: the ``durableflow`` command."""

import os
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command starts: nothing began, so nothing to tell but the code
    raise SystemExit(130) from None

if __name__ == "__main__":
    # ``-m`` puts the current directory first on sys.path; the command searches it last, after installed modules,
    # as the ``durableflow`` script does, so that a file there cannot stand in for one (``--path DIR`` comes first).
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path.append(sys.path.pop(0))
    raise SystemExit(main())
