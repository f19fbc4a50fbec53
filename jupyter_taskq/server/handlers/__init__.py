"""The taskq REST API under ``{base_url}taskq/api/``: one module per resource, thin HTTP over the service.

``base.py`` holds what every handler shares; ``routes.py`` alone imports the resource modules and builds the
URL table, and only the extension app imports ``routes``, so no module here imports another that imports it.
"""
