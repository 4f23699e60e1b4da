"""``python -m lagsplit`` is the ``lagsplit`` command."""
from .entry import main

main()
