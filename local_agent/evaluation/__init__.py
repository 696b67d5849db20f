"""The benchmark of BENCHMARK.md: synthesize with each method, train the same detector and classifier, test on
real defects. Import the pieces from their modules (``harness``, ``metrics`` ...); nothing heavy is imported here."""
