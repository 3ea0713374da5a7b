"""The practice's providers: the cached list and its refresh."""
