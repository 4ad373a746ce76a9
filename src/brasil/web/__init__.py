"""`brasil web`: a dashboard of the tree in a browser, fed by one 9P connection (docs/reference.md,
"Web dashboard"). source.py reads the namespace and keeps a snapshot; server.py serves it over
HTTP (aiohttp) with a token, a strict Content-Security-Policy and server-sent events; static/
holds the page (plain HTML, CSS and JS, no build step, nothing fetched from the network)."""
