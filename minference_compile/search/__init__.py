"""Per-head pattern search (``minference-compile search``), its explain / viz views, and the configs we ship."""
