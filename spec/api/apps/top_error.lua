-- Fails while loading: an error at the top level.
error("boom at the top level")
