"""The IFCB format and archives, over fsspec file objects: what a bin is and how to read it.

Imports only `model/` (for the labelled-images container); nothing here knows about Dask, stores or the terminal.
"""
