"""``python -m l2l_pcm.cli``: the same as the ``l2l-pcm`` command."""

import sys

from l2l_pcm.cli import main

sys.exit(main())
