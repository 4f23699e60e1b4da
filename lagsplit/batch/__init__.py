"""``lagsplit batch``: re-process an archive of recordings on a Dask cluster (a local one
by default), each plane stream of each recording one task, ``--split`` cutting a long one
into chunks on several workers."""
