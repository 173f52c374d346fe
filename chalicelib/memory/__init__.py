"""In-memory twins of every port: the unit tests' backends and the reference for the contract suite."""
