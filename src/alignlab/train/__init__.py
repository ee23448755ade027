"""One thin recipe per method over TRL (ours where TRL has none), plus shared run machinery."""
