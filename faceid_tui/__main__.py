"""``python -m faceid_tui`` runs the faceid command."""

from faceid_tui.cli import main

raise SystemExit(main())
