"""``sar2opt-geo serve``: a local web app to look at scenes and results on a map, translate chips and follow
jobs (an optional extra: ``pip install -e ".[serve]"``).

- :mod:`~sar2opt_geo.serve.catalog`: the scenes found at start-up, by identifier;
- :mod:`~sar2opt_geo.serve.tiles`: Web-Mercator tiles and point values by rio-tiler;
- :mod:`~sar2opt_geo.serve.chips`: uploads, samples and models, translated by the pipeline in a worker thread;
- :mod:`~sar2opt_geo.serve.app`: the Starlette routes; :mod:`~sar2opt_geo.serve.system`: the system panel;
- ``static/``: the page, with Leaflet and leaflet-side-by-side vendored from the npm registry
  (versions and licences in ``static/VENDORED.md``): the page requests nothing outside the app.
"""

#: Modules the extra installs; the CLI names the first one missing.
REQUIRED_MODULES = ("starlette", "uvicorn", "rio_tiler", "python_multipart")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Largest upload accepted by default (MB).
MAX_UPLOAD_MB = 16
