"""The schedule sync: asking for one, its lifecycle, the run itself, the store it writes, the watch."""
