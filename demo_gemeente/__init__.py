"""Seeded synthetic Dutch municipality ("Demodam") for demos and tests.

``build_municipality`` / ``DemoWorld`` produce a consistent BAG, wijk/buurt
indeling and BRP population with daily changes; ``write_dropzone`` writes the
files the municipality's own systems would deliver.
"""
from demo_gemeente.dropzone import write_dropzone
from demo_gemeente.generator import EPOCH, DemoWorld, advance, build_municipality

__all__ = ["EPOCH", "DemoWorld", "advance", "build_municipality", "write_dropzone"]
