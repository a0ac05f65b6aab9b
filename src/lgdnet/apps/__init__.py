"""Applications composed from the engine, as torchvision's ``references/`` are: the demo on
the embedded dataset (:mod:`~lgdnet.apps.demo`) and the miniature ablations
(:mod:`~lgdnet.apps.ablation`). Above the engine, beside the command line."""
