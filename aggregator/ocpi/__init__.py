"""OCPI 2.2.1 as Smart Charging Service Provider (the CPO delegates smart charging to us).

transport: authentication (Token A / registered tokens), the envelope, request/correlation ids, routing
headers and server-side pagination. registration: the credentials handshake both ways. receivers: Sessions and
Locations pushed or pulled from the CPO, mapped onto the portfolio. views + aggregator.ocpi_urls: the endpoints.
The outbound side (chargingprofiles sender, generic client, pagination client) is aggregator.adapters.ocpi.
"""
