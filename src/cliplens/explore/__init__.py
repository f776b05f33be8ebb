"""``cliplens explore``: an interactive explorer in the browser, served on 127.0.0.1.

Pick a toy-world scene or upload a photo, type texts or classes, pick one map method or several side by side,
and see the maps over the photo, the exact decomposition's layer and head bars, the top heads' maps, CLIP
Surgery split by head and a segmentation with its legend; with a store, browse its atlas. The model is loaded
once and serves one request at a time; the page polls each job's progress.

* :mod:`cliplens.explore.session`: :class:`Explorer`, the state and the JSON API without HTTP;
* :mod:`cliplens.explore.views`: what a run draws (with :mod:`cliplens.report`'s figures);
* :mod:`cliplens.explore.jobs`: work in threads, with progress and errors as one paragraph;
* :mod:`cliplens.explore.server`: the standard library's HTTP server and the static page (why not gradio: see
  there).
"""

from __future__ import annotations

from cliplens.explore.server import make_server, serve
from cliplens.explore.session import Explorer

__all__ = ["Explorer", "make_server", "serve"]
