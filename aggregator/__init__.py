"""The EV aggregator: portfolio of charge points and sessions, flexibility model, optimiser, dispatch."""
