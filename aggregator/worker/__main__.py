"""``python -m aggregator.worker [--config FILE] …``: same as ``aggregator worker``."""

import sys

from aggregator.commands.worker import main

sys.exit(main())
