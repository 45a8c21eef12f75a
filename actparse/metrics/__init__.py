"""Challenge metrics, bit-exact with the official evaluation code and vectorised.

* :mod:`.tps` - Kinetics-TPS part state correctness and its accuracy-vs-threshold area;
* :mod:`.multisports` - MultiSports frame-mAP and video-mAP (and the ACT/MOC variant);
* :mod:`.detection` - COCO-style detection AP at one IoU (persons, parts);
* :mod:`.classification` - top-1, FineGym mean-class accuracy per hierarchy level, confusion.

Each module's docstring lists the official behaviours it reproduces and the options that switch
a quirk off (defaults are always the official behaviour).
"""

from . import classification, detection, multisports, tps  # noqa: F401
