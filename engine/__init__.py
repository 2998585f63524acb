"""procfs-ct engine: a sans-IO emulation of Linux connection tracking.

Packet bytes and the current time go in; the packet's conntrack state comes out.
Nothing here sleeps, reads the clock, opens a socket or a file.
"""
