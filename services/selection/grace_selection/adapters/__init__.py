"""Adapters around the core: neighbour indexes and score stores, named by technology and role."""
