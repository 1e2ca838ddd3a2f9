"""Pure frame-in, frame-out transforms on Narwhals lazy frames: no paths, sessions, settings or clocks."""
