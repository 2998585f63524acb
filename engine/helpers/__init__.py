"""Conntrack helpers: readers of a control connection's payload that file expectations
for the connections it announces (FTP, TFTP, IRC DCC).  engine/helpers/registry.py lists
them as data; engine/expect.py keeps the expectations they file."""
