"""``python -m portc`` runs the same CLI as the ``portc`` console script."""

from portc.compiler.cli import main

raise SystemExit(main())
