"""Simulated peers for demos and tests: an OCPI CPO, smart meters, the demo scenario. No product app imports it."""
