"""``python -m actorflow.cli``: the ``actorflow`` command."""

from __future__ import annotations

import sys

from actorflow.cli._cli import main

sys.exit(main())
