"""Experiments in the toy world: what is done *with* the generator and the toy CLIP of
:mod:`cliplens.toyworld`, which stands just above :mod:`cliplens.core` and knows nothing of this package.

* :mod:`~cliplens.experiments.train` – contrastive training and fine-tuning of the toy CLIP
  (:mod:`~cliplens.experiments.train_state`: a run folder's resumable state);
* :mod:`~cliplens.experiments.evaluate` – zero-shot and retrieval metrics of a toy model;
* :mod:`~cliplens.experiments.spurious` – the "toy waterbirds" split and its group accuracies;
* :mod:`~cliplens.experiments.bench` – the ground-truth benchmark of the map methods (``cliplens toy bench``);
* :mod:`~cliplens.experiments.heads` – which heads carry which scene factor (``cliplens toy heads``);
* :mod:`~cliplens.experiments.choices` – the commands' defaults, importable without torch.

They use the whole library (models, maps, the store, analyses, evaluation), so they sit above it; only the
command line (:mod:`cliplens.cli.toy`) uses them.
"""
