"""lagsplit: split a live microscope stream into slow and fast components."""

__version__ = "0.1.0"
