"""The explorer's state and its JSON API, without HTTP: the model (loaded once, used under one lock), the images
one can pick (toy-world scenes and uploads), the runs and the store's atlas as jobs, and the files they write.

Every method takes and returns plain JSON-able values, so :mod:`cliplens.explore.server` is a thin layer over
it and the tests call it directly. A request a user got wrong raises
:class:`~cliplens.errors.InvalidInputError` (one paragraph saying what and what to do) before any job starts.
Files live in one temporary folder the explorer owns (:meth:`Explorer.close` removes it); nothing of the
user's is written or overwritten.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cliplens.errors import CliplensError, InvalidInputError
from cliplens.explore.jobs import Job, Jobs
from cliplens.explore.views import VIEWS, Request, draw

__all__ = ["Explorer", "ImageEntry", "MAX_UPLOAD", "MAX_TEXTS"]

#: the largest upload taken (bytes)
MAX_UPLOAD = 32 * 1024 * 1024
#: texts per run, methods per run
MAX_TEXTS, MAX_METHODS = 16, 8
#: toy-world scenes offered: (seed, objects)
SCENES = ((0, 3), (1, 2), (2, 1), (3, 3), (4, 2), (5, 3))
_RUN_KEYS = {"image", "texts", "methods", "views", "templates", "background", "params"}
_ATLAS_KEYS = {"last", "texts", "images_per_text"}


@dataclass(frozen=True)
class ImageEntry:
    """An image one can pick: ``scene-N`` (a toy-world scene) or ``upload-N``; ``path`` is its file."""

    id: str
    name: str
    path: Path
    kind: str  # "scene" or "upload"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "url": f"/images/{self.id}"}


class Explorer:
    """The explorer of one model (a loaded :class:`~cliplens.models.base.CLIPAdapter`), optionally with a store
    whose atlas it builds (``store``: a :class:`~cliplens.store.Store`; ``store_model``: the store's model,
    default ``model``). ``folder``: where its files go (default: a fresh temporary folder, removed by
    :meth:`close`)."""

    def __init__(self, model: Any, *, store: Any = None, store_model: Any = None, scenes: bool = True,
                 folder: str | Path | None = None) -> None:
        self.model = model
        self.store = store
        self.store_model = store_model if store_model is not None else model
        self.lock = threading.Lock()  # one request at a time on the model
        self.jobs = Jobs()
        self._own = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="cliplens-explore-") if folder is None else folder)
        for sub in ("images", "runs", "atlas"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._images: dict[str, ImageEntry] = {}
        self._uploads = 0
        self._guard = threading.Lock()
        if scenes:
            self._add_scenes()

    # ------------------------------------------------------------------ state
    def info(self) -> dict[str, Any]:
        """The model, the map methods (name, what they read, a one-line summary), the views, the images, and
        the store (or ``None``)."""
        from cliplens.maps.base import map_class, map_names
        from cliplens.text.templates import TEMPLATE_SETS

        methods = []
        for name in map_names(baseline=False):
            cls = map_class(name)
            methods.append({"name": name, "text_dependent": cls.text_dependent,
                            "second_backbone": cls.second_backbone,
                            "summary": (cls.__doc__ or "").strip().split("\n")[0]})
        m = self.model
        store = None
        if self.store is not None:
            sm = self.store.header["model"]
            store = {"path": str(self.store.path), "images": len(self.store), "model": sm["name"],
                     "weights": sm["weights"], "layers": int(self.store.shape["layers"])}
        return {"model": {"name": m.name, "family": m.family, "weights": m.weights,
                          "random_weights": bool(m.random_weights), "layers": m.vision.num_layers,
                          "heads": m.vision.num_heads},
                "methods": methods, "default_methods": ["surgery"], "views": list(VIEWS),
                "templates": ["none", *TEMPLATE_SETS], "images": self.images(), "store": store}

    def images(self) -> list[dict[str, Any]]:
        with self._guard:
            return [e.to_dict() for e in self._images.values()]

    def image_file(self, image_id: str) -> Path | None:
        e = self._images.get(image_id)
        return e.path if e is not None else None

    def _add_scenes(self) -> None:
        """The toy world's scenes, rendered at the model's input size (at least 64 pixels)."""
        from PIL import Image

        from cliplens.report.demo import demo_scene
        from cliplens.toyworld.captions import describe
        from cliplens.toyworld.scenes import render_scene

        size = max(64, int(self.model.preprocess_config.image_size[0]))
        for i, (seed, objects) in enumerate(SCENES):
            scene = demo_scene(seed, objects, image_size=size)
            pixels, _ = render_scene(scene)
            path = self.folder / "images" / f"scene-{i}.png"
            Image.fromarray(pixels).save(path)
            self._images[f"scene-{i}"] = ImageEntry(f"scene-{i}", describe(scene), path, "scene")

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        """Keep an uploaded image (its bytes) and return its entry; a file that is not a readable image is refused
        with the reason."""
        from cliplens.images.io import open_image

        if not data:
            raise InvalidInputError("the upload is empty: choose an image file (PNG, JPEG, …)")
        if len(data) > MAX_UPLOAD:
            raise InvalidInputError(f"the upload is {len(data) / 2**20:.1f} MiB; the explorer takes images up to "
                                    f"{MAX_UPLOAD // 2**20} MiB: choose a smaller file")
        shown = Path(name or "image").name[:120] or "image"
        suffix = re.sub(r"[^a-z0-9.]", "", Path(shown).suffix.lower())[:8]
        with self._guard:
            self._uploads += 1
            image_id = f"upload-{self._uploads}"
        path = self.folder / "images" / f"{image_id}{suffix}"
        path.write_bytes(data)
        try:
            open_image(path)
        except CliplensError as e:
            path.unlink(missing_ok=True)
            raise InvalidInputError(f"{shown!r} is not an image the explorer can read ({_reason(e)}): choose a "
                                    "PNG, JPEG, WebP, BMP, GIF or TIFF file") from None
        entry = ImageEntry(image_id, shown, path, "upload")
        with self._guard:
            self._images[image_id] = entry
        return entry.to_dict()

    # ------------------------------------------------------------------ runs
    def parse(self, request: Mapping[str, Any]) -> Request:
        """A run request (JSON: ``image``, ``texts``, ``methods``, ``views``, optional ``templates``, ``background``
        and ``params``: ``["surgery.blocks=2", "sigma=3"]`` as ``--param`` takes them) checked; every mistake is
        said in one paragraph."""
        from cliplens.maps.base import map_names
        from cliplens.maps.params import parse_params
        from cliplens.text.templates import TEMPLATE_SETS

        if not isinstance(request, Mapping):
            raise InvalidInputError("a run is a JSON object with image, texts, methods and views")
        unknown = sorted(set(request) - _RUN_KEYS)
        if unknown:
            raise InvalidInputError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in the "
                                    f"run; it takes {', '.join(sorted(_RUN_KEYS))}")
        image = request.get("image")
        entry = self._images.get(image) if isinstance(image, str) else None
        if entry is None:
            raise InvalidInputError(f"no image {image!r}: pick a scene or upload an image first")
        texts = _strings(request.get("texts"), "texts")
        if not texts:
            raise InvalidInputError("type at least one text (one per line, or separated by commas)")
        if len(texts) > MAX_TEXTS:
            raise InvalidInputError(f"{len(texts)} texts: the explorer maps at most {MAX_TEXTS} at once")
        methods = _strings(request.get("methods", ["surgery"]), "methods")
        known = map_names()
        bad = [m for m in methods if m not in known]
        if bad:
            raise InvalidInputError(f"{', '.join(map(repr, bad))} {'is not a map method' if len(bad) == 1 else 'are not map methods'}; "
                                    f"pick from {', '.join(known)}")
        if not methods:
            raise InvalidInputError("pick at least one map method")
        if len(methods) > MAX_METHODS:
            raise InvalidInputError(f"{len(methods)} methods: the explorer runs at most {MAX_METHODS} side by side")
        views = _strings(request.get("views", ["maps"]), "views")
        bad = [v for v in views if v not in VIEWS]
        if bad or not views:
            raise InvalidInputError(f"views are {', '.join(VIEWS)}; got {', '.join(map(repr, bad)) or 'none'}")
        templates = request.get("templates", "none")
        if templates not in ("none", *TEMPLATE_SETS):
            raise InvalidInputError(f"templates must be none or one of {', '.join(TEMPLATE_SETS)}; got {templates!r}")
        background = _strings(request.get("background", ["background"]), "background")
        names = list(dict.fromkeys([*methods, *(["surgery"] if "surgery-heads" in views else [])]))
        params = parse_params(_strings(request.get("params", []), "params"), names)
        req = Request(image=str(entry.path), name=entry.name, texts=tuple(texts), methods=tuple(methods),
                      views=tuple(v for v in VIEWS if v in views), templates=str(templates),
                      background=tuple(background), params={n: p for n, p in params.items() if p})
        for name in names:
            req.method(name)  # a parameter value the method refuses is said now, not in the job
        return req

    def run(self, request: Mapping[str, Any]) -> Job:
        """Start a run (checked first: a bad request raises at once); poll :meth:`job` for its progress and
        figures."""
        req = self.parse(request)

        def work(job: Job) -> dict[str, Any]:
            out = self.folder / "runs" / job.id
            out.mkdir(parents=True)
            count = [0]

            def step(message: str) -> None:
                count[0] += 1
                job.step(message, done=count[0] - 1, total=max(job.total, count[0] + 1))

            with self.lock:
                job.state = "running"
                job.step("starting", 0, _steps(req))
                with warnings.catch_warnings(record=True) as caught:  # one run at a time: the lock
                    warnings.simplefilter("always", UserWarning)
                    result = draw(self.model, req, out, step, job.partial,
                                  link=lambda name: f"/files/runs/{job.id}/{name}")
            for w in caught:  # a method's fallback, unknown words, truncated texts: a note each, once
                line = " ".join(str(w.message).split())
                if issubclass(w.category, UserWarning) and line not in result["notes"]:
                    result["notes"].append(line)
            return {**result, "figures": list(result["figures"]), "image": req.name, "texts": list(req.texts), "methods": list(req.methods)}

        return self.jobs.start("run", work)

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise InvalidInputError(f"no job {job_id!r} (the explorer forgets finished jobs after a while, and all "
                                    "of them when it restarts): run again")
        return job.to_dict()

    # ------------------------------------------------------------------ the store's atlas
    def atlas(self, request: Mapping[str, Any]) -> Job:
        """Build the store's atlas (TEXTSPAN of the heads of the ``last`` k layers, ``texts`` per head, from
        the store's default pool; ``images_per_text`` at each end of each text); its pages are served under
        ``/files/atlas/<job>/``."""
        if self.store is None:
            raise InvalidInputError("the explorer was started without a store: start it with "
                                    "'cliplens explore --store STORE' to browse a store's atlas")
        request = dict(request or {})
        unknown = sorted(set(request) - _ATLAS_KEYS)
        if unknown:
            raise InvalidInputError(f"unknown field(s) {', '.join(unknown)}; the atlas takes "
                                    f"{', '.join(sorted(_ATLAS_KEYS))}")
        n_layers = int(self.store.shape["layers"])
        last = _count(request.get("last", min(2, n_layers)), "last layers", n_layers)
        m = _count(request.get("texts", 5), "texts per head", 50)
        per = _count(request.get("images_per_text", 3), "images per text", 20)

        def work(job: Job) -> dict[str, Any]:
            from cliplens.analyses.atlas import build_atlas, store_dataset
            from cliplens.analyses.pools import default_pool, load_pool
            from cliplens.analyses.textspan import textspan
            from cliplens.report.atlas import write_atlas

            with self.lock:
                job.state = "running"
                job.step("TEXTSPAN over the store's heads", 0, 3)
                pool = default_pool(self.store.header["model"])
                texts = load_pool(pool)
                emb = self.store_model.encode_text(texts)
                spans = textspan(self.store, texts, emb, last=last, m=m)
                spans.settings.update({"store": str(self.store.path), "pool": pool})
                job.step("mapping the images shown", 1)
                atlas = build_atlas(self.store, spans, self.store_model, store_dataset(self.store),
                                    images_per_text=per, text_embeddings=dict(zip(texts, emb, strict=True)))
                job.step("writing the atlas", 2)
                files = write_atlas(atlas, self.folder / "atlas" / job.id)
            rel = files.index.relative_to(self.folder)
            return {"url": f"/files/{rel.as_posix()}", "heads": [h.name for h in atlas.heads],
                    "layers": atlas.layers, "pool": pool}

        return self.jobs.start("atlas", work)

    # ------------------------------------------------------------------ files
    def file(self, relative: str) -> Path | None:
        """A file the explorer wrote (under ``runs/`` or ``atlas/``), or ``None`` (also for any path that
        would leave its folder)."""
        parts = Path(relative).parts
        if not parts or parts[0] not in ("runs", "atlas") or any(p in ("..", "") for p in parts):
            return None
        path = (self.folder / relative).resolve()
        root = self.folder.resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    def close(self) -> None:
        """Remove the explorer's temporary folder (when it made it)."""
        if self._own:
            shutil.rmtree(self.folder, ignore_errors=True)


def _reason(e: CliplensError) -> str:
    return getattr(e, "reason", None) or str(e).rstrip(".")


def _strings(value: Any, what: str) -> list[str]:
    """A list of non-empty strings (a single string is split at new lines), kept once each, in order."""
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{what} must be a list of strings, got {type(value).__name__}")
    return list(dict.fromkeys(v.strip() for v in value if v.strip()))


def _count(value: Any, what: str, largest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= largest:
        raise InvalidInputError(f"{what} must be a whole number from 1 to {largest}, got {value!r}")
    return value


def _steps(req: Request) -> int:
    """Roughly how many steps :func:`~cliplens.explore.views.draw` reports for ``req`` (the bar's length)."""
    n = 2 * len(req.methods) + 1 if "maps" in req.views else 0
    n += 1 + len(req.texts) * (("bars" in req.views) + ("head-maps" in req.views)) if (
        "bars" in req.views or "head-maps" in req.views) else 0
    n += 1 + len(req.texts) if "surgery-heads" in req.views else 0
    return max(1, n + ("segment" in req.views))
