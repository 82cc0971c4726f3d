"""The exchange: participants, congestion points and connections, the USEF flex trading cycle, API and portal."""
