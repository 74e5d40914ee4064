"""The Virtual Observatory interface: IVOA SIA v2 query and VOSI endpoints."""
