"""The published layout: what a version of a dataset is in a storage, written and read here.

- :mod:`~datastack.canonical.layout`: the storage paths of a dataset (raw sources, fetched
  downloads, a version's prefix, its data file) and the layout constants;
- :mod:`~datastack.canonical.writer` and :mod:`~datastack.canonical.columns`: the writer of the
  canonical HDF5 file (layout 1: ``samples``/``targets``; layout 2: named fields, written
  incrementally);
- :mod:`~datastack.canonical.published`: a published version opened as one reader per split;
  the readers of each layout: :mod:`~datastack.canonical.hdf5` (layout 1, also any HDF5 file
  with ``samples``/``targets``) and :mod:`~datastack.canonical.records` (layout 2), over the
  stored-array helpers of :mod:`~datastack.canonical._stored` and
  :mod:`~datastack.canonical._columns`.

Nothing else in the library builds a storage path or opens a published file. Importing this
package imports nothing (h5py loads in the function that needs it).
"""
