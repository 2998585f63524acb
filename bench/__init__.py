"""procfs-ct benchmarks: `bench/run` measures ours beside the kernel and dpkt in one run."""
