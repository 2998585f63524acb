"""procfs-ct views: the FUSE filesystem, traffic sources and the command line."""
