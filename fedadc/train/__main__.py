from fedadc.federated.cli import main

raise SystemExit(main())
