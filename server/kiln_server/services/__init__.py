"""The service layer: every query and transaction of the server. Handlers call these."""
