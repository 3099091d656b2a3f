"""``python -m fastt2i.eval ...`` = ``fastt2i eval ...`` (also under torchrun)."""
from .command import main

raise SystemExit(main())
