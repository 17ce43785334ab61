"""``python -m facellm.cli``: the same as the ``facellm`` command (``accelerate launch -m facellm.cli`` uses it)."""

import sys

from facellm.cli import main

sys.exit(main())
