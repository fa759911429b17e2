"""``python -m fedadc.experiment``: the same as ``fedadc-experiment``."""

from fedadc.experiment.cli import main

raise SystemExit(main())
