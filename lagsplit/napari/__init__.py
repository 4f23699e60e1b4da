"""lagsplit in napari: an npe2 plugin (``napari.yaml``: the reader of lagsplit HDF5 files and
the "Follow a lagsplit run" dock widget) and the live viewer behind ``lagsplit view``.

Importing this package imports neither napari nor Qt; the modules that need them import
them where they are used (``pip install 'lagsplit[napari]'``)."""
