"""``python -m fastt2i ...`` is the ``fastt2i`` command."""
from fastt2i.cli import main

raise SystemExit(main())
