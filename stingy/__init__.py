"""Simulated cache, the Stingy cache-slab allocator and its tools."""
