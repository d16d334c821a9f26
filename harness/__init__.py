"""Conformance harness: the network-namespace lab and the drivers that send real packets through it."""
