"""The bidding API (/api/v1/market/): one view per action, grouped by message family."""
