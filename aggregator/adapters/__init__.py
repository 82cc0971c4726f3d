"""Protocol adapters for dispatch, one module per protocol behind aggregator.adapters.base."""
