// Anchor for the shared precompiled header of apps, tests and benchmarks.
