"""Serving: the SavedModel export (exporter.py, config.py), the nearest-neighbour index
(index.py), the Python API (api.py), the HTTP server (http_app.py), its browser page (page.py,
static/) and the item catalogue the page shows (item_catalog.py)."""
