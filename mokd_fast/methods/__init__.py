"""Training methods beside MOKD (DoGo first), each in its own package with its loss kernels."""
