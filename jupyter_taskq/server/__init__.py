"""The server side: the Jupyter server extension and its REST API over one domain service."""
