"""Reports: figures (:mod:`.plotting`), the HTML pieces every page shares (:mod:`.html`), the report
on the user's own images (:mod:`.page`, ``cliplens report``), the toy-world demo (:mod:`.demo`,
``cliplens demo``) and output files that are never overwritten (:mod:`.files`)."""
