"""Converting an ImageFolder (or a list file) to FFCV ``.beton`` or DALI webdataset shards."""
