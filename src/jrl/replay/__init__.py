"""Replay buffers as pure functions over array pytrees: uniform rings and prioritized sum trees."""
