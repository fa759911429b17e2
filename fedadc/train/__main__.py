from fedadc.train.cli import main

raise SystemExit(main())
