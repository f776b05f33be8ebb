"""Reports: figures (:mod:`.plotting`), HTML pages (:mod:`.demo`), output files (:mod:`.files`)."""
