"""``python -m pysmtp_wasm.proxy``: the same as the ``pysmtp-wasm-proxy`` command."""

import sys

from ._main import main

sys.exit(main())
